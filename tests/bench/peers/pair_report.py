#!/usr/bin/env python3
"""pair_report.py [-v] OUTDIR (-v: also each pair's keys/s and ratio): the table of a pair.sh run
(and, when it ran an earlier build too, that build against ps-lite and the new one against it).
Per shape (op, keys/call, universe, in-flight): medians over pairs of keys/s for ember
(rpc_bench CSV) and ps-lite (pslite_bench text), the median [min-max] of per-pair ratios
ember/ps-lite, server and client CPU ns/key medians, and for 65,536-key pulls the payload
throughput (keys/s * 64 dims * 4 B) as % of the iperf3 1-stream loopback ceiling measured
in the same pair's ember run (the larger of its start/end iperf3 runs)."""
import csv, glob, math, os, re, statistics, sys

args = [a for a in sys.argv[1:] if a != "-v"]
verbose = "-v" in sys.argv[1:]
out = args[0] if args else "."
med = lambda xs: statistics.median(xs) if xs else float("nan")

PS = re.compile(r"^(pull|push)\s+n=(\d+) dim=(\d+) inflight=(\d+)\s+keys/s runs:.*?\| median ([\d.]+)M"
                r".*?server CPU ([-\d.]+) s/M keys, client ([-\d.]+) s/M keys")
# data[(op, keys, universe, D)][pair] = {"ps": (kps, srv_ns, cli_ns), "em": (...), "ceil": gbit}
data, problems = {}, []
for f in sorted(glob.glob(os.path.join(out, "pair*_S*_pslite.txt"))):
    pair = int(re.search(r"pair(\d+)_", os.path.basename(f)).group(1))
    txt = open(f).read()
    m = re.search(r"universe (\d+)", txt)
    if not m:
        problems.append(f"no ps-lite result in {os.path.basename(f)}"); continue
    uni = int(m.group(1))
    for line in txt.splitlines():
        m = PS.match(line)
        if m:
            op = "push-sgd" if m.group(1) == "push" else "pull"
            key = (op, int(m.group(2)), uni, int(m.group(4)))
            srv = float(m.group(6))
            data.setdefault(key, {}).setdefault(pair, {})["ps"] = (
                float(m.group(5)) * 1e6, srv * 1e3 if srv >= 0 else float("nan"), float(m.group(7)) * 1e3)

for f in sorted(glob.glob(os.path.join(out, "pair*_S*_ember.csv")) +
                glob.glob(os.path.join(out, "pair*_S*_base.csv"))):
    pair = int(re.search(r"pair(\d+)_", os.path.basename(f)).group(1))
    who = "base" if f.endswith("_base.csv") else "em"
    txtf = f[:-4] + ".txt"
    txt = open(txtf).read() if os.path.exists(txtf) else ""
    m = re.search(r"from a universe of (\d+)", txt)
    uni = int(m.group(1)) if m else -1
    for r in csv.DictReader(open(f)):
        if r["backend"] != "cpu" or r["clients"] != "1":
            continue
        if r.get("failed", "0") not in ("0", ""):
            problems.append(f"{os.path.basename(f)}: {r['op']} {r['keys']} x{r['in_flight']}: failed={r['failed']}")
        key = (r["op"], int(r["keys"]), uni, int(r["in_flight"]))
        d = data.setdefault(key, {}).setdefault(pair, {})
        d[who] = (float(r["mkeys_s_median"]) * 1e6, float(r["server_ns_per_key"]), float(r["client_ns_per_key"]))
        c = float(r["loopback_1stream_gb_s"] or "nan")
        if not math.isnan(c) and who == "em":
            d["ceil"] = c * 8  # GB/s -> Gbit/s
for f in sorted(glob.glob(os.path.join(out, "pair*_S*_ember.txt"))):
    if not os.path.exists(f[:-4] + ".csv"):
        problems.append(f"no CSV beside {os.path.basename(f)} (ember run failed?)")

def fmt(x, spec):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)

print(f"pairs found: {sorted({p for v in data.values() for p in v})}  (dim 64, uniform, 1 client; "
      "keys/s in M; ratio = ember/ps-lite per pair: median [min-max]; ns/key = CPU ns per key)")
hdr = (f"{'op':<9}{'keys':>6}{'universe':>9}{'D':>3} | {'ember':>7}{'ps-lite':>8} | {'ratio':>6} {'[min-max]':<13}"
       f"| {'srv ns/k em':>11}{'ps':>6} | {'cli ns/k em':>11}{'ps':>6} | n")
print(hdr); print("-" * len(hdr))
opord = {"pull": 0, "push-sgd": 1}
keys = sorted(data, key=lambda k: (-k[2], k[1], opord.get(k[0], 9), k[3]))
for k in keys:
    pairs = data[k]
    em = [v["em"] for v in pairs.values() if "em" in v]
    ps = [v["ps"] for v in pairs.values() if "ps" in v]
    ratios = [v["em"][0] / v["ps"][0] for v in pairs.values() if "em" in v and "ps" in v and v["ps"][0] > 0]
    rng = f"[{min(ratios):.2f}-{max(ratios):.2f}]" if ratios else ""
    print(f"{k[0]:<9}{k[1]:>6}{k[2]:>9}{k[3]:>3} | {fmt(med([e[0] for e in em]) / 1e6, '7.3f')}"
          f"{fmt(med([p[0] for p in ps]) / 1e6, '8.3f')} | {fmt(med(ratios), '6.2f')} {rng:<13}"
          f"| {fmt(med([e[1] for e in em]), '11.0f')}{fmt(med([p[1] for p in ps]), '6.0f')}"
          f" | {fmt(med([e[2] for e in em]), '11.0f')}{fmt(med([p[2] for p in ps]), '6.0f')} | {len(ratios)}")

if any("base" in v for k in keys for v in data[k].values()):
    print("\nthe earlier build (BASE_RPC_BENCH) in the same pairs: base/ps-lite and new/base per pair, "
          "median [min-max]; ns/key base -> new")
    for k in keys:
        pairs = data[k]
        bp = [v["base"][0] / v["ps"][0] for v in pairs.values() if "base" in v and "ps" in v and v["ps"][0] > 0]
        nb = [v["em"][0] / v["base"][0] for v in pairs.values() if "base" in v and "em" in v and v["base"][0] > 0]
        bs = med([v["base"][1] for v in pairs.values() if "base" in v])
        bc = med([v["base"][2] for v in pairs.values() if "base" in v])
        es = med([v["em"][1] for v in pairs.values() if "em" in v])
        ec = med([v["em"][2] for v in pairs.values() if "em" in v])
        rb = f"[{min(bp):.2f}-{max(bp):.2f}]" if bp else ""
        rn = f"[{min(nb):.2f}-{max(nb):.2f}]" if nb else ""
        print(f"{k[0]:<9}{k[1]:>6}{k[2]:>9}{k[3]:>3} | base/ps {fmt(med(bp), '5.2f')} {rb:<12}"
              f"| new/base {fmt(med(nb), '5.2f')} {rn:<12}| srv {fmt(bs, '4.0f')} -> {fmt(es, '4.0f')}"
              f"  cli {fmt(bc, '4.0f')} -> {fmt(ec, '4.0f')}")

big = [k for k in keys if k[0] == "pull" and k[1] == 65536]
if big:
    print("\n65,536-key pulls vs the iperf3 1-stream loopback ceiling (same pair's ember run; "
          "payload = keys/s x 64 x 4 B, in Gbit/s = 1e9 bit/s)")
    print(f"{'D':>3} | {'ember Gbit/s':>12} {'ps-lite Gbit/s':>14} {'iperf1 Gbit/s':>13} | "
          f"{'ember % ceil':>12} {'ps-lite % ceil':>14}   per-pair ember %")
    for k in big:
        pairs = data[k]
        gb = lambda kps: kps * 64 * 4 * 8 / 1e9
        eg = [gb(v["em"][0]) for v in pairs.values() if "em" in v]
        pg = [gb(v["ps"][0]) for v in pairs.values() if "ps" in v]
        ce = [v["ceil"] for v in pairs.values() if "ceil" in v]
        ep = [100 * gb(v["em"][0]) / v["ceil"] for v in pairs.values() if "em" in v and "ceil" in v]
        pp = [100 * gb(v["ps"][0]) / v["ceil"] for v in pairs.values() if "ps" in v and "ceil" in v]
        print(f"{k[3]:>3} | {fmt(med(eg), '12.2f')} {fmt(med(pg), '14.2f')} {fmt(med(ce), '13.2f')} | "
              f"{fmt(med(ep), '11.1f')}% {fmt(med(pp), '13.1f')}%   " + " ".join(f"{x:.1f}" for x in ep))
if verbose:
    print("\nper pair: ember M keys/s / ps-lite M keys/s = ratio")
    for k in keys:
        row = []
        for p, v in sorted(data[k].items()):
            e = v["em"][0] / 1e6 if "em" in v else float("nan"); q = v["ps"][0] / 1e6 if "ps" in v else float("nan")
            row.append(f"p{p} {e:.2f}/{q:.2f}={e / q if q else float('nan'):.2f}")
        print(f"{k[0]:<9}{k[1]:>6}{k[2]:>9}{k[3]:>3} | " + "  ".join(row))
for p in problems:
    print("problem:", p)
