# Process helpers shared by bench/run.sh and bench/http/run.sh (sourced, not run).

# alive PID: exists and is not a zombie.
alive() {
  local line
  { IFS= read -r line < "/proc/$1/stat"; } 2>/dev/null || return 1
  line=${line##*) }
  [[ ${line:0:1} != Z ]]
}

# tree_pids ROOT: ROOT and all its descendants (from the ppid field of /proc/*/stat).
tree_pids() {
  local root=$1 stat line rest pid
  local -A kids=()
  local -a fields
  for stat in /proc/[0-9]*/stat; do
    { IFS= read -r line < "$stat"; } 2>/dev/null || continue
    rest=${line##*) }            # comm may contain spaces and ')'
    read -r -a fields <<< "$rest"
    pid=${stat#/proc/}; pid=${pid%/stat}
    kids[${fields[1]}]+="$pid "
  done
  local -a queue=("$root") out=()
  while ((${#queue[@]})); do
    pid=${queue[0]}; queue=("${queue[@]:1}")
    out+=("$pid")
    # shellcheck disable=SC2206
    [[ -n ${kids[$pid]:-} ]] && queue+=(${kids[$pid]})
  done
  echo "${out[@]}"
}
