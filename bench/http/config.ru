# The Rack app that bench/http/run.sh serves with unicorn and with puma.
#
# GET / (any path) -> 200, text/plain; charset=utf-8, "Hello from <pid>\n": the same body
# as the C# server and nginx in that benchmark (17 bytes for a 5-digit pid), and the pid
# lets the script count how requests spread over the workers.
run(lambda do |_env|
  body = "Hello from #{Process.pid}\n"
  [200, { "content-type" => "text/plain; charset=utf-8", "content-length" => body.bytesize.to_s }, [body]]
end)
