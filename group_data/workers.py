"""Worker hosts (inventory group `workers`): machines that only run jobs for the front host.

Each knob can be set per host in the inventory's host data; these are the defaults. A worker host runs the
workers of `worker_services` (their images built there, their models uploaded there), takes each job, its audio
and hands in its result through the front's link interface (HTTPS, its own certificate and token; no Redis:
stages/link.py), and restarts by itself after a
crash or a reboot (Docker restart policy), so a host that comes back rejoins without a deploy.
"""

worker_services = ["faster"]      # which services' jobs this host takes
worker_model = ""                 # "" = the service's model from group data (e.g. "/models/tiny.en", "large-v3")
worker_device = "cpu"             # "cuda" on a GPU host: the NVIDIA runtime (stages/gpu.py) and the GPU images
worker_compute_type = ""          # "" = int8 on cpu, float16 on cuda
worker_concurrency = 1            # workers per service on this host (each keeps its own model loaded); the front
                                  # runs as many relays for them
worker_cpu_threads = 0            # 0 = the engine's default
worker_project_dir = "/opt/whisper-worker"   # <dir>-<service>: one compose project per service
worker_link_dir = "/etc/whisper-platform/link"
