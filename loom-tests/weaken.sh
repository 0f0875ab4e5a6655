#!/usr/bin/env bash
# Weakening experiments for the loom models. Each ordering (or protocol step) the models guard
# is weakened in a scratch copy of the tree, one at a time, and every model is run against it:
# the models meant to guard it must FAIL. Prints, per experiment, each model's result and what
# loom reported; exits non-zero if a weakening went unnoticed by all models, or by the model
# named as its guard. The working tree itself is never modified.
#
#   loom-tests/weaken.sh            # all experiments
#   loom-tests/weaken.sh W3 W5      # some of them
#
# Uses LOOM_MAX_PREEMPTIONS (default 3, as `make loom`) and a target directory of its own
# (target/loom-weaken), so dependencies build once. About 30 s per experiment on 2 cores.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}/loom-weaken
scratch=$(mktemp -d)
logs=$target/logs
mkdir -p "$logs"
trap 'rm -rf "$scratch"' EXIT
export RUSTFLAGS="--cfg loom"
export LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3}
# A panic inside a loom thread with backtraces on overflows the coroutine's stack and hangs.
export RUST_BACKTRACE=0
only=("$@")
missed=0

# experiment ID FILE GUARD 'PERL SUBSTITUTION' 'DESCRIPTION'
#   GUARD: the test binary (tests/GUARD.rs) whose models must catch it.
experiment() {
    local id=$1 file=$2 guard=$3 subst=$4 what=$5
    if [ ${#only[@]} -gt 0 ] && [[ ! " ${only[*]} " =~ " $id " ]]; then
        return
    fi
    rm -rf "$scratch/tree"
    mkdir -p "$scratch/tree"
    (cd "$root" && tar --exclude=./target --exclude=./.git -cf - .) | (cd "$scratch/tree" && tar -xf -)
    local f="$scratch/tree/$file"
    cp "$f" "$f.orig"
    perl -0pi -e "$subst" "$f"
    echo
    echo "== $id: $what ($file)"
    if cmp -s "$f" "$f.orig"; then
        echo "   the substitution did not apply (the source changed?)"
        missed=1
        return
    fi
    diff -u "$f.orig" "$f" | grep -E '^[-+][^-+]' | sed 's/^/   /'
    local log="$logs/$id.log" start=$SECONDS
    (cd "$scratch/tree" && cargo test --release -p loom-tests --no-fail-fast \
        --target-dir "$target" -- --test-threads=1) >"$log" 2>&1
    if grep -q "^error\[" "$log"; then
        echo "   BUILD FAILED:"; grep -A5 "^error\[" "$log" | head -20
        missed=1
        return
    fi
    echo "   ($((SECONDS - start))s)"
    # Per test binary, per test: ok / FAILED, with the first line of each failure's panic.
    awk -v guard="$guard" '
        /Running tests\// { split($2, p, "/"); bin = p[2]; sub(/\.rs$/, "", bin) }
        /^test .* \.\.\. (ok|FAILED)$/ {
            name = $2; res = $NF; pending = ""
            printf "   %-22s %-34s %s\n", bin, name, (res == "ok" ? "passed" : "FAILED")
            if (res == "FAILED") { failed[bin] = 1; anyfail = 1 }
            next
        }
        /^test .* \.\.\. / { pending = $2 }
        /process didn.t exit successfully/ && pending != "" {
            printf "   %-22s %-34s %s\n", bin, pending, "FAILED (the test binary aborted)"
            failed[bin] = 1; anyfail = 1; pending = ""
        }
        END {
            if (!anyfail) exit 2
            if (!(guard in failed)) exit 3
        }' "$log"
    case $? in
        2) echo "   NOT CAUGHT by any model"; missed=1 ;;
        3) echo "   NOT CAUGHT by its guard, tests/$guard.rs"; missed=1 ;;
    esac
    echo "   loom reported:"
    grep -E "deadlock;|assertion .* failed|read before|returned twice|never pushed|re-armed|Causality|stale waker" "$log" \
        | sed -E 's/^thread .* panicked at [^ ]*: ?//' | sort | uniq -c | sort -rn | head -6 \
        | sed 's/^/     /'
}

# The return queue: push Release / drain Acquire publish the links and the buffer's bytes.
experiment W1 src/pool/return_queue.rs returns_exactly_once \
    's/(node,\s*)Ordering::Release,/${1}Ordering::Relaxed,/' \
    'push: the head CAS Release -> Relaxed'
experiment W2 src/pool/return_queue.rs returns_exactly_once \
    's/head\.swap\(0, Ordering::Acquire\)/head.swap(0, Ordering::Relaxed)/' \
    'drain: the head swap Acquire -> Relaxed'
# The wake signal: notify Release / park's reset Acquire make a notified push visible.
experiment W3 src/sync/wake.rs lost_wakeup \
    's/swap\(NOTIFIED, Ordering::Release\)/swap(NOTIFIED, Ordering::Relaxed)/' \
    'notify: the swap Release -> Relaxed'
experiment W4 src/sync/wake.rs lost_wakeup \
    's/self\.state\.swap\(AWAKE, Ordering::Acquire\);/self.state.swap(AWAKE, Ordering::Relaxed);/' \
    'park: the reset swap Acquire -> Relaxed'
# Protocol steps that must be read-modify-writes, or must not be skipped.
experiment W5 src/sync/wake.rs lost_wakeup \
    's/self\.state\.swap\(AWAKE, Ordering::Acquire\);/let _ = self.state.load(Ordering::Acquire);\n        self.state.store(AWAKE, Ordering::Relaxed);/' \
    'park: the reset as a load and a store instead of one swap'
experiment W6 src/sync/wake.rs lost_wakeup \
    's/\.compare_exchange\(AWAKE, SLEEPING, Ordering::Relaxed, Ordering::Relaxed\)\s*\.is_ok\(\)/.swap(SLEEPING, Ordering::Relaxed) != u32::MAX/' \
    'park: announce the sleep unconditionally (no check for a pending notification)'
experiment W7 src/sync/wake.rs lost_wakeup \
    's/if self\.state\.swap\(NOTIFIED, Ordering::Release\) == SLEEPING \{/if self.state.load(Ordering::Relaxed) == NOTIFIED {\n            return false;\n        }\n        if self.state.swap(NOTIFIED, Ordering::Release) == SLEEPING {/' \
    'notify: skip the swap when the state already reads NOTIFIED'
experiment W8 src/pool/send_lease.rs starvation \
    's/self\.queue\.push\(id\)\?;\n(\s*)Ok\(self\.notifier\.notify\(\)\)/let woke = self.notifier.notify();\n${1}self.queue.push(id)?;\n${1}Ok(woke)/' \
    'give_back (a SendLease drop): notify before the push instead of after'
# The executor's wakers: the generation check, the scheduled bit, and the orderings that make
# a wake's data visible to the poll it leads to.
experiment W9 src/exec/sched.rs exec_wakers \
    's/(s \| SCHEDULED,\s*)Ordering::Release,/${1}Ordering::Relaxed,/' \
    'waker: the scheduling CAS Release -> Relaxed'
experiment W10 src/exec/sched.rs exec_wakers \
    's/(            match self\.state\.compare_exchange_weak\(\n                s,\n                s \| SCHEDULED,)/            if s \& SCHEDULED != 0 {\n                return false;\n            }\n${1}/' \
    'waker: return without a CAS when the bit is already set'
experiment W11 src/exec/sched.rs exec_wakers \
    's/fetch_and\(!SCHEDULED, Ordering::Acquire\)/fetch_and(!SCHEDULED, Ordering::Relaxed)/' \
    'drain: the clear of the scheduled bit Acquire -> Relaxed'
experiment W12 src/exec/sched.rs exec_wakers \
    's/(h\.state\.fetch_and\(!SCHEDULED, Ordering::Acquire\);)\n(\s*)(f\(usize::from\(id\)\);)/${3}\n${2}${1}/' \
    'drain: clear the scheduled bit after the poll instead of before'
experiment W13 src/exec/sched.rs exec_wakers \
    's/if \(s >> 1\) & TAG_MASK != tag \{/if false {/' \
    'waker: no generation check (a stale waker schedules the slot)'
experiment W14 src/exec/sched.rs exec_wakers \
    's/h\.state\.fetch_add\(GEN_ONE, Ordering::Relaxed\);/h.state.store((h.state.load(Ordering::Relaxed) \& !SCHEDULED) + GEN_ONE, Ordering::Relaxed);/' \
    'retire: clear the scheduled bit with the generation bump'
experiment W15 src/exec/sched.rs exec_wakers \
    's/let _ = shared\.ready\.push\(self\.index\);\n(\s*)(\/\/[^\n]*\n\s*)?shared\.notifier\.notify\(\);/shared.notifier.notify();\n${1}let _ = shared.ready.push(self.index);/' \
    'waker: notify before the push instead of after'

echo
if [ $missed -ne 0 ]; then
    echo "some weakenings were not caught"
    exit 1
fi
echo "every weakening was caught by its guard"
