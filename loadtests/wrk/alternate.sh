# Sourced by the A/B scripts: wrk against two servers in turn, A B A B …, so drift on the shared
# machine hits both alike; prints each round, the medians and the per-pair ratios (A / B).
# alternate <port A> <port B> <wrk script> <max id> <rounds> <duration> <connections> [unit]
alternate() {
  local a=$1 b=$2 script=$3 max_id=$4 rounds=$5 dur=$6 conns=$7 unit=${8:-req/s}
  rps() { MAX_ID=$max_id wrk -t2 -c"$conns" -d"$dur" -s "loadtests/wrk/$script" "http://127.0.0.1:$1" |
    sed -n 's/^RESULT rps=\([0-9]*\).*non2xx=\([0-9]*\).*/\1 \2/p'; }
  for port in "$a" "$b"; do MAX_ID=$max_id wrk -t2 -c"$conns" -d3s -s "loadtests/wrk/$script" "http://127.0.0.1:$port" >/dev/null; done
  local results=() ra rb bad_a bad_b
  for r in $(seq 1 "$rounds"); do
    read -r ra bad_a < <(rps "$a")
    read -r rb bad_b < <(rps "$b")
    [[ "$bad_a$bad_b" == "00" ]] || { echo "non-2xx answers during the run" >&2; return 1; }
    results+=("$ra $rb")
    printf 'round %d: A %6d %s   B %6d %s   ratio %.3f\n' "$r" "$ra" "$unit" "$rb" "$unit" "$(echo "$ra / $rb" | bc -l)"
  done
  printf '%s\n' "${results[@]}" | UNIT=$unit python3 -c '
import os, statistics, sys
unit = os.environ["UNIT"]
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
a, b = [r[0] for r in rows], [r[1] for r in rows]
ratios = [x / y for x, y in rows]
print(f"median A {statistics.median(a):.0f} {unit}, B {statistics.median(b):.0f} {unit}, "
      f"ratio of medians {statistics.median(a) / statistics.median(b):.3f}, "
      f"median per-pair ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
'
}
