#!/usr/bin/env python3
"""Peak RSS of one command, with and without the processes it starts.

  peakrss.py CMD [ARGS...]   → prints "<with children KB> <process alone KB>", exits with CMD's status

"with children" is ru_maxrss from wait4 (what GNU time's %M reports: the largest of the
process and every descendant it waited for, e.g. `helm` under `karpctl up`). "process
alone" is the last VmHWM read from /proc/<pid>/status, polled every 2 ms while it runs
(the high-water mark only grows; a zombie has none, so the value is the one read
just before exit). Output of CMD goes to /dev/null; used for untimed runs only.
"""

import os
import subprocess
import sys
import time


def hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main():
    p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while True:
        v = hwm(p.pid)
        if v is not None:
            peak = max(peak, v)
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.002)
    print(usage.ru_maxrss, peak)
    sys.exit(os.waitstatus_to_exitcode(status) if os.waitstatus_to_exitcode(status) >= 0 else 1)


if __name__ == "__main__":
    main()
