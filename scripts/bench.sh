#!/usr/bin/env bash
# `just bench`: throughput and memory figures of camxuc on this machine, every one measured
# here (nothing hard-coded). Writes target/camxuc-bench/bench.json and prints a Markdown summary
# on stdout (progress and logs go to stderr and target/camxuc-bench/work/).
#
#   CAMXUC_BENCH_MODEL=DIR   trained model directory: adds the whole acoustic route
#                            (decode -> features -> encoder -> head) and runs the memory check
#                            with `classify --segments`; without it those figures are recorded
#                            as skipped, with the reason.
#   (always, when ../shared has the RAVDESS clips and whisper-base is installed)
#                            `camxuc classify --llm none` over those 384 clips end to end, one
#                            process pinned to one core and then on all cores: the product
#                            path's × real time (CAMXUC_BENCH_MODEL, else the default model).
#   CAMXUC_BENCH_LLM=SPEC    LLM to measure (default smollm2-135m); skipped when not installed.
#   CAMXUC_BENCH_LONG_S=S    length of the long input for the memory check (default 3600 s).
#
# Needs: the release build (done here), python3 (builds the long WAV and the JSON), espeak-ng
# (`camxuc synth` makes the speech), GNU time (/usr/bin/time; installed from Debian if missing
# and we are root).
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/camxuc-bench
work=$out/work
bin=target/release/camxuc
llm_spec=${CAMXUC_BENCH_LLM:-smollm2-135m}
long_s=${CAMXUC_BENCH_LONG_S:-3600}
model=${CAMXUC_BENCH_MODEL:-}
mkdir -p "$work"
log() { echo "bench: $*" >&2; }

if [[ -n "$model" ]]; then
    if [[ -f "$model/model.json" ]]; then
        model=$(realpath "$model")
    else
        log "CAMXUC_BENCH_MODEL=$model is not a model directory (no model.json); acoustic figures skipped"
        model_skip="CAMXUC_BENCH_MODEL=$model has no model.json"
        model=
    fi
else
    model_skip="no model directory given (set CAMXUC_BENCH_MODEL=DIR to a trained model)"
fi
export model_skip=${model_skip:-}

# GNU time reports the peak resident set size of the command and of the children it waited
# for (the decode worker included), which is what a user of `camxuc classify` pays.
time_installed=false
if [[ ! -x /usr/bin/time ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "installing the Debian 'time' package for /usr/bin/time"
        apt-get install -y -q time >&2 || { apt-get update -q >&2 && apt-get install -y -q time >&2; }
        time_installed=true
    else
        log "/usr/bin/time is missing and cannot be installed here: apt-get install time"
        exit 1
    fi
fi

# Other work on the machine skews every figure: the load average at the start goes in the JSON.
export load_at_start; load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
log "release build"
cargo build --release --quiet --bin camxuc

# run_measured NAME CMD...: wall time, peak RSS and exit status of one command.
run_measured() {
    local name=$1; shift
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    /usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
    t1=$(date +%s.%N)
    local rss
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/$name.time")
    echo "{\"rc\": $rc, \"wall_s\": $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'), \"peak_rss_kb\": ${rss:-null}}" \
        >"$work/$name.json"
    log "$name: exit $rc, peak RSS ${rss:-?} kB"
}

# 1. Decode + trim + features per clip (and the acoustic route with a model): benches/pipeline.rs.
log "pipeline bench (log: $work/pipeline.log)"
# candle's element-wise pool is process-wide and sized once from CANDLE_NUM_THREADS, so each
# thread count is its own process: the one-thread figures really use one core.
rm -f "$out/pipeline.json" "$work/pipeline-2.json"
if ! CAMXUC_BENCH_MODEL="$model" CAMXUC_BENCH_THREADS=1 CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1 \
    cargo bench --quiet --bench pipeline >"$work/pipeline.log" 2>&1; then
    log "pipeline bench failed; see $work/pipeline.log"
fi
if [[ -n "$model" ]] && ! CAMXUC_BENCH_MODEL="$model" CAMXUC_BENCH_THREADS=2 CANDLE_NUM_THREADS=2 \
    RAYON_NUM_THREADS=2 CAMXUC_BENCH_ACOUSTIC_ONLY=1 CAMXUC_BENCH_JSON="$work/pipeline-2.json" \
    cargo bench --quiet --bench pipeline >>"$work/pipeline.log" 2>&1; then
    log "pipeline bench (2 threads) failed; see $work/pipeline.log"
fi

# 1b. The product path end to end: `camxuc classify --llm none` as a user runs it, one process
# over every RAVDESS clip (decode workers, model load and output included), pinned to one core
# (`taskset -c 0`, which the decode workers inherit) and then on all cores. The model is
# CAMXUC_BENCH_MODEL, else the default one (`models/acoustic/default` or the embedded copy).
rm -f "$work/e2e-1.json" "$work/e2e-all.json"
e2e_skip=
e2e_clips=(../shared/data/ravdess-3class/clips/*.wav)
if [[ ! -e ${e2e_clips[0]} ]]; then
    e2e_skip="no RAVDESS clips under ../shared/data/ravdess-3class/clips"
elif [[ ! -e "${CAMXUC_MODELS_DIR:-models}/whisper-base/model.bin" ]]; then
    e2e_skip="whisper-base is not installed (camxuc models fetch whisper-base)"
elif ! command -v taskset >/dev/null; then
    e2e_skip="taskset (util-linux) is missing"
else
    e2e_model=()
    [[ -n "$model" ]] && e2e_model=(--model "$model")
    for cores in 1 all; do
        pin=()
        [[ $cores == 1 ]] && pin=(taskset -c 0)
        log "classify --llm none over ${#e2e_clips[@]} clips, cores: $cores"
        run_measured "e2e-$cores" "${pin[@]}" "$bin" classify --llm none "${e2e_model[@]}" \
            --format jsonl "${e2e_clips[@]}"
    done
    # openSMILE's eGeMAPS (functionals) over the same files on the same core, for scale: a
    # classic paralinguistic feature extractor, from PyPI into a private venv (needs the
    # package index the first time; skipped with the reason otherwise). Whole process, like
    # the camxuc figure.
    osm=$work/opensmile-venv
    if [[ ! -x $osm/bin/python ]] || ! "$osm/bin/python" -c 'import opensmile' 2>/dev/null; then
        log "openSMILE from PyPI into $osm"
        python3 -m venv "$osm" >&2 && "$osm/bin/pip" install -q opensmile >&2 || true
    fi
    rm -f "$work/opensmile.json"
    if "$osm/bin/python" -c 'import opensmile' 2>/dev/null; then
        log "openSMILE eGeMAPS over ${#e2e_clips[@]} clips, one core"
        run_measured opensmile taskset -c 0 "$osm/bin/python" - "${e2e_clips[@]}" <<'PY'
import sys, opensmile
smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                        feature_level=opensmile.FeatureLevel.Functionals)
for path in sys.argv[1:]:
    smile.process_file(path)
print(opensmile.__version__)
PY
    else
        log "openSMILE could not be installed (no package index?); its figure is skipped"
    fi
fi
export e2e_skip

# 2. The reasoner LLM: ms per routed clip, from `camxuc models bench`.
rm -f "$work/llm.json"
llm_skip=
if [[ -e "${CAMXUC_MODELS_DIR:-models}/$llm_spec" ]]; then
    log "LLM bench: $llm_spec (log: $work/llm.log)"
    if ! "$bin" models bench "$llm_spec" --json "$work/llm.json" >"$work/llm.log" 2>&1; then
        llm_skip="camxuc models bench $llm_spec failed: $(tail -n 1 "$work/llm.log")"
    fi
else
    llm_skip="LLM $llm_spec is not installed under models/ (camxuc models fetch)"
fi
export llm_skip

# 3. Peak memory: one short clip vs a long recording made of synthetic utterances and pauses.
log "synthesising speech for the memory check"
rm -rf "$work/synth"
"$bin" synth --out "$work/synth" --per-class 8 --speakers 3 --seed 11 >"$work/synth.log" 2>&1
long_wav=$work/long-${long_s}s.wav
synth_clips=("$work"/synth/clips/*.wav)
short_wav=${synth_clips[0]}
log "building a ${long_s} s WAV from the synthetic clips"
python3 - "$work/synth/clips" "$long_wav" "$long_s" <<'PY'
# Utterances in a seeded random order separated by 0.3-1.5 s pauses with faint noise (a
# recording is never digitally silent), streamed to disk so this script stays small.
import glob, random, struct, sys, wave
clips_dir, out_path, total_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
rng = random.Random(7)
clips = []
for path in sorted(glob.glob(clips_dir + "/*.wav")):
    with wave.open(path) as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
            sys.exit(f"{path}: expected 16 kHz mono 16-bit, the format camxuc synth writes")
        clips.append(w.readframes(w.getnframes()))
if not clips:
    sys.exit(f"no clips in {clips_dir}")
rate, target = 16000, int(total_s * 16000)
# One 2 s noise buffer, sliced at random offsets: millions of gauss() calls would take long.
noise_buf = struct.pack(f"<{2 * rate}h", *(int(rng.gauss(0, 8)) for _ in range(2 * rate)))
with wave.open(out_path, "wb") as out:
    out.setnchannels(1); out.setsampwidth(2); out.setframerate(rate)
    written = 0
    while written < target:
        pause = int(rng.uniform(0.3, 1.5) * rate)
        start = rng.randrange(0, 2 * rate - pause)
        noise = noise_buf[2 * start : 2 * (start + pause)]
        for chunk in (noise, rng.choice(clips)):
            n = min(len(chunk) // 2, target - written)
            out.writeframes(chunk[: 2 * n])
            written += n
PY

if [[ -n "$model" ]]; then
    mem_cmd=("$bin" classify --segments --llm none --model "$model" --format jsonl)
else
    mem_cmd=("$bin" features --format json)
fi
log "peak memory: short clip"
run_measured mem_short "${mem_cmd[@]}" "$short_wav"
log "peak memory: ${long_s} s input (this takes a while)"
run_measured mem_long "${mem_cmd[@]}" "$long_wav"
export mem_command="${mem_cmd[*]}"

# 4. The workbench under a steady load: 100 clips classified one after another through
# `camxuc serve` (the embedded default model unless CAMXUC_BENCH_MODEL is set); the server's
# resident memory after the 1st, 10th, 50th and 100th clip shows whether it stays bounded.
rm -f "$work/serve.json"
serve_skip=
if [[ -e "${CAMXUC_MODELS_DIR:-models}/whisper-base/model.bin" ]]; then
    log "workbench: 100 sequential classifications (log: $work/serve.log)"
    rm -rf "$work/serve-data"
    serve_model=()
    [[ -n "$model" ]] && serve_model=(--model "$model")
    if ! python3 - "$bin" "$work/serve-data" "$work/serve.json" "$work/synth/clips" "${serve_model[@]}" \
        >"$work/serve.log" 2>&1 <<'PY'
import glob, json, subprocess, sys, time, urllib.request, uuid
binary, data, out, clips_dir, *model = sys.argv[1:]
clips = sorted(glob.glob(clips_dir + "/*.wav"))
if not clips:
    sys.exit(f"no clips in {clips_dir}")
server = subprocess.Popen([binary, "serve", "--port", "0", "--data", data, *model],
                          stdout=subprocess.PIPE, text=True)
def field(name):
    for line in open(f"/proc/{server.pid}/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
try:
    url = server.stdout.readline().strip().split()[-1]
    if not url.startswith("http://"):
        sys.exit(f"unexpected first line from camxuc serve: {url!r}")
    rss, times = {}, []
    for i in range(100):
        path = clips[i % len(clips)]
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c{i}.wav\"\r\n"
                "Content-Type: audio/wav\r\n\r\n").encode() + open(path, "rb").read() + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(url + "/api/classify", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        t0 = time.monotonic()
        with urllib.request.urlopen(req, timeout=600) as r:
            decision = json.load(r)
        times.append(time.monotonic() - t0)
        if "label" not in decision:
            sys.exit(f"clip {i}: no label in {decision}")
        if i + 1 in (1, 10, 50, 100):
            rss[str(i + 1)] = field("VmRSS")
    result = {"clips": 100, "distinct_clips": len(clips), "rss_mb_after": rss,
              "peak_rss_mb": field("VmHWM"), "ms_per_clip_median": 1e3 * sorted(times)[50],
              "rss_growth_10_to_100_mb": rss["100"] - rss["10"],
              "measured": "the server process's VmRSS / VmHWM (decode workers are separate processes)"}
    json.dump(result, open(out, "w"), indent=2)
    print(json.dumps(result))
finally:
    server.terminate()
    server.wait(timeout=30)
PY
    then
        serve_skip="the workbench run failed: $(tail -n 1 "$work/serve.log")"
    fi
else
    serve_skip="whisper-base is not installed (camxuc models fetch whisper-base)"
fi
export serve_skip

# 5. Everything into one JSON, and the Markdown summary.
export time_installed long_wav short_wav model llm_spec
export git_commit; git_commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
export git_dirty; git_dirty=$([[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]] && echo true || echo false)
export rustc_version; rustc_version=$(rustc --version)
python3 - "$out" "$work" <<'PY'
import datetime, json, os, platform, sys, wave
out, work = sys.argv[1], sys.argv[2]
env = os.environ

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def duration(path):
    with wave.open(path) as w:
        return w.getnframes() / w.getframerate()

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
result = {
    "machine": {
        "nproc": os.cpu_count(), "cpu_model": cpu, "os": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": env["git_commit"], "git_dirty": env["git_dirty"] == "true",
        "rustc": env["rustc_version"], "profile": "release",
        "load_average_at_start": [float(x) for x in env["load_at_start"].split()],
    },
    "model_dir": env["model"] or None,
}

# Stages per clip.
stages = load(f"{out}/pipeline.json")
if stages is not None:
    stages += load(f"{work}/pipeline-2.json") or []
def stage(prefix):
    return [s for s in stages or [] if s["stage"].startswith(prefix)]
pipeline = {"features": stage("in-process decode") + stage("isolated decode"),
            "acoustic_route": stage("acoustic route") or None}
if stages is None:
    pipeline["skipped"] = f"cargo bench --bench pipeline wrote nothing; see {work}/pipeline.log"
if not pipeline["acoustic_route"]:
    pipeline["acoustic_route_skipped"] = env["model_skip"] or f"no acoustic figures; see {work}/pipeline.log"
result["stages"] = pipeline

# The product path end to end (`classify --llm none` over the RAVDESS clips).
e2e = {"skipped": env["e2e_skip"]} if env["e2e_skip"] else {}
if not e2e:
    clips_dir = "../shared/data/ravdess-3class/clips"
    clips = [os.path.join(clips_dir, f) for f in os.listdir(clips_dir) if f.endswith(".wav")]
    audio_s = sum(duration(p) for p in clips)
    e2e = {"command": "camxuc classify --llm none --format jsonl CLIPS", "audio_s": audio_s}
    for cores in ("1", "all"):
        r = load(f"{work}/e2e-{cores}.json") or {}
        if r.get("rc") == 0:
            decided = sum(1 for l in open(f"{work}/e2e-{cores}.out") if l.lstrip().startswith("{"))
            r.update(clips=len(clips), decisions=decided, real_time_factor=audio_s / r["wall_s"],
                     ms_per_clip=1e3 * r["wall_s"] / len(clips))
        else:
            err = open(f"{work}/e2e-{cores}.err").read().strip().splitlines()
            r["error"] = err[-1] if err else f"exit {r.get('rc')}"
        e2e["one_core" if cores == "1" else "all_cores"] = r
    osm = load(f"{work}/opensmile.json")
    if osm is None:
        e2e["opensmile"] = {"skipped": "openSMILE (PyPI opensmile) could not be installed"}
    elif osm.get("rc") == 0:
        e2e["opensmile"] = {**osm, "what": "openSMILE eGeMAPSv02 functionals, pinned to one core",
                            "version": open(f"{work}/opensmile.out").read().strip(),
                            "clips": len(clips), "real_time_factor": audio_s / osm["wall_s"]}
    else:
        err = open(f"{work}/opensmile.err").read().strip().splitlines()
        e2e["opensmile"] = {**osm, "error": err[-1] if err else f"exit {osm.get('rc')}"}
result["classify_end_to_end"] = e2e

# LLM per routed clip.
llm = load(f"{work}/llm.json")
if llm is not None:
    llm = {"spec": env["llm_spec"], **llm}
    routing = load(f"{env['model']}/routing.json") if env["model"] else None
    frac = (routing or {}).get("target_route_fraction")
    if frac is not None and "decision_ms_warm" in llm:
        # What the LLM adds per clip on average when this share of clips is routed to it.
        llm["route_fraction"] = frac
        llm["ms_per_clip_at_route_fraction"] = frac * llm["decision_ms_warm"]
    result["llm"] = llm
else:
    result["llm"] = {"spec": env["llm_spec"], "skipped": env["llm_skip"] or "no report written"}

# Peak memory, short vs long input.
def mem(name, path):
    r = load(f"{work}/{name}.json") or {}
    audio_s = duration(path)
    entry = {"input": path, "audio_s": audio_s, "command": env["mem_command"] + " FILE", **r}
    if r.get("peak_rss_kb") is not None:
        entry["peak_rss_mb"] = r["peak_rss_kb"] / 1024
    if r.get("rc") == 0 and r.get("wall_s"):
        entry["real_time_factor"] = audio_s / r["wall_s"]
        lines = [l for l in open(f"{work}/{name}.out") if l.strip()]
        if env["model"]:
            decided = [json.loads(l) for l in lines if l.lstrip().startswith("{")]
            entry["segments"] = len(decided)
    else:
        err = open(f"{work}/{name}.err").read().strip().splitlines()
        entry["error"] = err[-1] if err else f"exit {r.get('rc')}"
    return entry
short, long_ = mem("mem_short", env["short_wav"]), mem("mem_long", env["long_wav"])
memory = {"short": short, "long": long_, "time_package_installed": env["time_installed"] == "true",
          "peak_rss_is": "the largest of camxuc and its decode worker (GNU time, wait4), not their sum"}
if short.get("peak_rss_mb") and long_.get("peak_rss_mb") and long_.get("rc") == 0:
    memory["long_over_short_rss"] = long_["peak_rss_mb"] / short["peak_rss_mb"]
    # The decoded long file alone as 16 kHz f32 would take this much: bounded memory stays well below.
    memory["long_input_as_f32_mb"] = long_["audio_s"] * 16000 * 4 / 2**20
result["memory"] = memory
result["serve"] = load(f"{work}/serve.json") or {"skipped": env["serve_skip"] or "no report written"}

with open(f"{out}/bench.json", "w") as f:
    json.dump(result, f, indent=2)

# Markdown summary.
m = result["machine"]
print(f"Measured {m['date']} on {m['nproc']} × {m['cpu_model']}, commit {m['git_commit'][:10]}"
      + (" (dirty)" if m["git_dirty"] else "") + ", release build, load average at start "
      + f"{m['load_average_at_start'][0]:.1f}.\n")
print("| Stage (per clip, one at a time) | Threads | Clips/s | ms/clip | × real time |")
print("|---|---:|---:|---:|---:|")
for s in pipeline["features"] + (pipeline["acoustic_route"] or []):
    name = "decode + trim + features" + (" (decode worker)" if "isolated" in s["stage"] else "")
    if s["stage"].startswith("acoustic"):
        name = "acoustic route (decode → features → encoder → head)"
    print(f"| {name} | {s.get('threads', 1)} | {s.get('clips_per_s', 1000 / s['ms_per_clip']):.1f} "
          f"| {s['ms_per_clip']:.1f} | {s['real_time_factor']:.0f} |")
if not pipeline["acoustic_route"]:
    print(f"| acoustic route | – | – | – | skipped: {pipeline['acoustic_route_skipped']} |")
corpus = (pipeline["features"] or [{}])[0].get("corpus", "?")
print(f"\nClips: {corpus}.\n")
if "skipped" in e2e:
    print(f"`classify --llm none` end to end: skipped ({e2e['skipped']}).\n")
else:
    print(f"| `classify --llm none` end to end, {e2e['one_core'].get('clips', '?')} RAVDESS clips ({e2e['audio_s']:.0f} s of audio), one process | Wall s | ms/clip | × real time |")
    print("|---|---:|---:|---:|")
    for key, name in (("one_core", "pinned to one core (`taskset -c 0`)"), ("all_cores", "all cores")):
        r = e2e[key]
        if "error" in r:
            print(f"| {name} | – | – | failed: {r['error']} |")
        else:
            print(f"| {name} | {r['wall_s']:.1f} | {r['ms_per_clip']:.1f} | {r['real_time_factor']:.0f} |")
    o = e2e["opensmile"]
    if "real_time_factor" in o:
        print(f"| for scale: openSMILE {o['version']} eGeMAPS features only, one core | {o['wall_s']:.1f} "
              f"| {1e3 * o['wall_s'] / o['clips']:.1f} | {o['real_time_factor']:.0f} |")
    else:
        print(f"| for scale: openSMILE eGeMAPS | – | – | {o.get('skipped') or o.get('error')} |")
    print()
if "skipped" in result["llm"]:
    print(f"LLM: skipped ({result['llm']['skipped']}).\n")
else:
    l = result["llm"]
    print("| LLM | Load ms | Prompt tok/s | Gen tok/s | ms/routed clip (cold) | ms/routed clip (warm) | Peak RSS MB (one load) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| {l['spec']} | {l.get('load_ms', 0):.0f} | {l.get('prompt_tok_s', 0):.0f} | {l.get('gen_tok_s', 0):.1f} "
          f"| {l.get('decision_ms_cold', 0):.0f} | {l.get('decision_ms_warm', 0):.0f} | {l.get('peak_rss_mb_one_load', l.get('peak_rss_mb', 0)):.0f} |")
    if "ms_per_clip_at_route_fraction" in l:
        print(f"\nRouting {l['route_fraction']:.0%} of clips to it adds {l['ms_per_clip_at_route_fraction']:.0f} ms per clip on average.")
    print()
print(f"| Peak memory: `{env['mem_command'].replace(os.getcwd() + '/', '')} FILE` | Audio | Wall s | × real time | Peak RSS MB |")
print("|---|---:|---:|---:|---:|")
for label, e in (("one short clip", short), ("long recording", long_)):
    if "error" in e:
        print(f"| {label} | {e['audio_s']:.0f} s | – | – | failed: {e['error']} |")
    else:
        print(f"| {label} | {e['audio_s']:.1f} s | {e['wall_s']:.1f} | {e['real_time_factor']:.0f} | {e.get('peak_rss_mb', 0):.0f} |")
if "long_over_short_rss" in memory:
    print(f"\nThe {long_['audio_s'] / 60:.0f}-minute input peaks at {memory['long_over_short_rss']:.2f}× the short clip's RSS "
          f"(the whole file decoded to f32 would be {memory['long_input_as_f32_mb']:.0f} MB).")
sv = result["serve"]
if "skipped" in sv:
    print(f"\nWorkbench: skipped ({sv['skipped']}).")
else:
    after = sv["rss_mb_after"]
    print("\n| `camxuc serve`: 100 clips one after another | after 1 | after 10 | after 50 | after 100 | peak | ms/clip |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| server RSS MB | {after['1']:.0f} | {after['10']:.0f} | {after['50']:.0f} | {after['100']:.0f} "
          f"| {sv['peak_rss_mb']:.0f} | {sv['ms_per_clip_median']:.0f} |")
print(f"\nWritten to {out}/bench.json.")
PY
