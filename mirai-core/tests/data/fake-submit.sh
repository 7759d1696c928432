#!/bin/sh
# Stand-in for a scheduler's submit command in tests: reads the job script on stdin, runs it
# in the background here (with this environment, as schedulers export it), and prints a job id
# in the style of the scheduler named by $1. The job id is the process id, so `kill` cancels it.
script=$(mktemp)
cat > "$script"
sh "$script" >/dev/null 2>&1 &
pid=$!
case "$1" in
  slurm) echo "Submitted batch job $pid" ;;
  sge) echo "Your job $pid (\"mirai\") has been submitted" ;;
  pbs) echo "$pid.pbs-server" ;;
  lsf) echo "Job <$pid> is submitted to queue <normal>." ;;
esac
