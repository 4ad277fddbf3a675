"""Runs a command and prints the CPU time and peak RSS of all its (waited-for) descendants:
`user_s sys_s maxrss_kb wall_s` (getrusage RUSAGE_CHILDREN; maxrss is the largest single
process). Used for the curl|jq baseline, whose work is spread over short-lived processes."""
import resource
import subprocess
import sys
import time

start = time.monotonic()
subprocess.run(sys.argv[1:], check=True)
wall = time.monotonic() - start
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{r.ru_utime} {r.ru_stime} {r.ru_maxrss} {wall}")
