# Ruby version of the prefork greeting server.
#
#   ruby prefork.rb PORT WORKERS      (PORT 0 = any free port)
#
# The master binds 127.0.0.1:PORT (TCPServer sets SO_REUSEADDR), listens with a
# backlog of 1024 and forks WORKERS children, each looping on a blocking
# accept() -> "Hello from <pid>\n" -> close. It prints "ready <port>" on stdout
# once all children are forked, forwards SIGINT/SIGTERM to them and waits.
require 'socket'
require 'io/nonblock'

unless ARGV.length == 2 && ARGV.all? { |a| a.match?(/\A\d+\z/) }
  warn 'usage: ruby prefork.rb PORT WORKERS'
  exit 2
end
port = Integer(ARGV[0], 10)
workers = Integer(ARGV[1], 10)
if port > 65_535 || workers < 1
  warn 'usage: ruby prefork.rb PORT WORKERS'
  exit 2
end

server = TCPServer.new('127.0.0.1', port)
server.listen(1024)
# Ruby >= 3.0 makes sockets non-blocking and emulates blocking calls with
# poll(); turn that off so the workers really block in accept(2).
server.nonblock = false
port = server.addr[1]

master = Process.pid
pids = Array.new(workers) do
  fork do
    %w[INT TERM].each { |s| trap(s, 'DEFAULT') }
    greeting = "Hello from #{Process.pid}\n"
    loop do
      client = server.accept
      begin
        client.write(greeting)
      rescue SystemCallError
        # client went away: nothing to do
      ensure
        client.close
      end
      exit!(0) if Process.ppid != master # master is gone
    end
  end
end
server.close

%w[INT TERM].each do |sig|
  trap(sig) { pids.each { |pid| Process.kill(sig, pid) rescue nil } }
end
$stdout.puts "ready #{port}"
$stdout.flush
pids.each do |pid|
  Process.wait(pid)
rescue Errno::ECHILD
  nil
end
