"""docs/frameworks.md, Horovod: usage `python horovod_without_horovodrun.py script.py` (needs Horovod).

Horovod without horovodrun or ssh, as Trainyard pods would run it: one rendezvous server (what
worker 0's launcher would host), every rank started on its own with HOROVOD_* env."""
import os, subprocess, sys, time
from horovod.runner.http.http_server import RendezvousServer
from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts

hosts = "w0:1,w1:1"  # two "pods", one process each; hostnames are only labels for the plan
plan = get_host_assignments(parse_hosts(hosts), 2)
server = RendezvousServer(verbose=0)
port = server.start()
server.init(plan)
procs = []
for slot in plan:
    env = dict(os.environ,
               HOROVOD_GLOO_RENDEZVOUS_ADDR="127.0.0.1", HOROVOD_GLOO_RENDEZVOUS_PORT=str(port),
               HOROVOD_CONTROLLER="gloo", HOROVOD_CPU_OPERATIONS="gloo", HOROVOD_GLOO_IFACE="lo",
               HOROVOD_HOSTNAME=slot.hostname, HOROVOD_RANK=str(slot.rank), HOROVOD_SIZE=str(slot.size),
               HOROVOD_LOCAL_RANK=str(slot.local_rank), HOROVOD_LOCAL_SIZE=str(slot.local_size),
               HOROVOD_CROSS_RANK=str(slot.cross_rank), HOROVOD_CROSS_SIZE=str(slot.cross_size))
    procs.append(subprocess.Popen([sys.executable, *sys.argv[1:]], env=env))
codes = [p.wait() for p in procs]
server.stop()
print("rendezvous port", port, "exit codes", codes)
sys.exit(max(codes))
