#!/usr/bin/env bash
# benches/crypto.rs once per sequoia crypto backend, on the same machine in
# one run: builds the bench for each backend feature, runs the builds in
# turn RUNS times (interleaved, so a change of load hits both), and prints
# the median over the runs of each row's median, wall and CPU, side by
# side.
#
#   benches/crypto-backends.sh [RUNS]        RUNS defaults to 3
#
# Each run's full output stays in $CARGO_TARGET_DIR/crypto-backends/
# (target/ by default). Extra backends: BACKENDS="openssl nettle" and a
# FEATURES_<name> variable with the cargo flags of each other one.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
target="${CARGO_TARGET_DIR:-target}"
out="$target/crypto-backends"
mkdir -p "$out"
read -r -a backends <<< "${BACKENDS:-openssl nettle}"
FEATURES_openssl="${FEATURES_openssl:-}"
FEATURES_nettle="${FEATURES_nettle:---no-default-features --features crypto-nettle}"

for b in "${backends[@]}"; do
    flags_var="FEATURES_$b"
    read -r -a flags <<< "${!flags_var}"
    echo "building the bench with $b: cargo bench --locked --bench crypto --no-run ${flags[*]}" >&2
    exe=$(cargo bench --locked --bench crypto --no-run "${flags[@]}" 2>&1 \
        | tee "$out/build-$b.log" | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
    if [ -z "$exe" ]; then
        cat "$out/build-$b.log" >&2
        exit 1
    fi
    cp "$exe" "$out/crypto-$b"
done

for i in $(seq 1 "$runs"); do
    for b in "${backends[@]}"; do
        echo "run $i/$runs, $b (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
        "$out/crypto-$b" --bench > "$out/$b-$i.txt"
    done
done

python3 - "$out" "$runs" "${backends[@]}" <<'EOF'
import statistics, sys
out, runs, backends = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows, labels, names, loads = {}, {}, {}, {}
for b in backends:
    for i in range(1, runs + 1):
        for line in open(f"{out}/{b}-{i}.txt"):
            if line.startswith("load at"):
                loads.setdefault(b, []).append(line.split(":", 1)[1].split()[0])
            f = line.rstrip("\n").split("\t")
            if f[0] != "tsv":
                continue
            if f[1] == "backend":
                names[b] = f[2]
                continue
            rid, label, wall, _, cpu = f[1], f[2], int(f[3]), int(f[4]), int(f[5])
            labels.setdefault(rid, label)
            rows.setdefault(rid, {}).setdefault(b, []).append((wall, cpu))

def fmt(ns):
    us = ns / 1e3
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1e6:
        return f"{us / 1e3:.2f} ms"
    return f"{us / 1e6:.2f} s"

print()
print(f"median over {runs} runs of each row's median; CPU: thread CPU for one "
      "operation, process CPU (client and dev server) for login and pass")
print("backends: " + "; ".join(f"{b} = {names.get(b, '?')}" for b in backends))
print("load averages (1 min) at the start and end of the runs: "
      + "; ".join(f"{b} {' '.join(loads.get(b, []))}" for b in backends))
print()
head = "| row | " + " | ".join(f"{b} wall | {b} CPU" for b in backends)
if len(backends) == 2:
    head += f" | {backends[1]} CPU ÷ {backends[0]} CPU"
print(head + " |")
print("|---|" + "---:|" * (2 * len(backends) + (len(backends) == 2)))
for rid, label in labels.items():
    cells, cpus = [], []
    for b in backends:
        v = rows[rid].get(b)
        if not v:
            cells += ["", ""]
            cpus.append(None)
            continue
        wall = statistics.median(w for w, _ in v)
        cpu = statistics.median(c for _, c in v)
        cells += [fmt(wall), fmt(cpu)]
        cpus.append(cpu)
    if len(backends) == 2:
        cells.append(f"×{cpus[1] / cpus[0]:.2f}" if all(cpus) else "")
    print(f"| {label} | " + " | ".join(cells) + " |")
EOF
