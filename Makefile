# The commands people type. Everything here runs on a machine with only the Rust toolchain;
# `make nightly` adds the nightly pieces that miri and check-nostd need.

CARGO ?= cargo
# Where cargo puts its output (honours CARGO_TARGET_DIR).
CARGO_TARGET_DIR_OR_DEFAULT = $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
NIGHTLY ?= +nightly
# Bounded exhaustiveness for loom (see loom-tests/): preemption bound per model.
LOOM_MAX_PREEMPTIONS ?= 3

.PHONY: all build test test-interop lint fmt doc miri loom check-nostd echo broker probe bench bench-echo bench-nats nightly clean fuzz

all: build

build:
	$(CARGO) build --all-targets

## Unit, integration and doc tests of the library and loom-tests (real kernel, loopback only).
## The bench crate (tokio, monoio peers) is built only by `make bench`.
test:
	$(CARGO) test
	$(CARGO) test --features std --lib
	$(CARGO) test --features embedded-io-async --lib stream::

## The differential test: the same byte scripts (and config files) to the broker and to the
## real nats-server, replies compared. Needs Debian's nats-server (apt-get install nats-server;
## NATS_SERVER=path for another binary); `make test` does not.
test-interop:
	$(CARGO) test --test broker_diff -- --ignored

## Format check and clippy with warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features std -- -D warnings
	$(CARGO) clippy --all-targets --features embedded-io-async -- -D warnings

fmt:
	$(CARGO) fmt --all

## API docs; warnings are errors.
doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --features embedded-io-async

## The pool's tests under Miri (no kernel calls there, so all of them apply).
miri:
	MIRIFLAGS="-Zmiri-strict-provenance" $(CARGO) $(NIGHTLY) miri test --lib -- pool::

## loom models of the cross-thread path (release build, --cfg loom), exhaustive up to
## LOOM_MAX_PREEMPTIONS preemptions per execution; each prints its execution count and time
## (loom-tests/README.md has the numbers). RUST_BACKTRACE=0: with backtraces on, a failing
## model's panic inside a loom thread overflows loom's coroutine stack and hangs instead of
## failing. loom-tests/weaken.sh checks that each model fails when its ordering is weakened.
loom:
	RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=$(LOOM_MAX_PREEMPTIONS) RUST_BACKTRACE=0 \
		$(CARGO) test --release -p loom-tests --target-dir target/loom -- --nocapture

## Proves the library builds without std: against a sysroot that has only `core` (and
## compiler_builtins), so any use of std or alloc anywhere in the library, rustix's system-call
## layer included, fails to build. x86_64-unknown-none cannot be used: rustix's syscalls need a
## Linux target.
check-nostd:
	$(CARGO) $(NIGHTLY) build -Zbuild-std=core,compiler_builtins \
		--target x86_64-unknown-linux-gnu --lib --no-default-features \
		-p ringlet --target-dir target/nostd

## The echo server (the main job until the broker lands).
ARGS ?=
echo:
	$(CARGO) run --release --example echo -- --addr 127.0.0.1:7000 $(ARGS)

## The NATS-compatible broker on 127.0.0.1:4222, HTTP monitoring on 8222 (nats-server flags:
## make broker ARGS="-D").
broker:
	$(CARGO) run --release --example static_broker -- -a 127.0.0.1 -p 4222 -m 8222 $(ARGS)

## What this kernel's io_uring supports, and which backend Auto picks.
probe:
	$(CARGO) run --example probe

## Benchmarks (not tests; see bench/README.md): the echo benchmark, then the NATS benchmark.
## Settings shared by both: BENCH_SECS, BENCH_RUNS, BENCH_WARMUP_SECS, BENCH_SERVER_CPU,
## BENCH_CLIENT_CPU (environment). Run one alone with `make bench-echo` or `make bench-nats`.
## Both run even when the first reports failed runs; the exit status says whether either did.
bench:
	@$(MAKE) --no-print-directory bench-echo; e=$$?; \
		$(MAKE) --no-print-directory bench-nats; n=$$?; \
		[ $$e -eq 0 ] && [ $$n -eq 0 ]

## Echo benchmark: ringlet (io_uring and epoll backends, and the async stream_echo on io_uring)
## side by side with tokio and monoio echo servers, server pinned to CPU 0 and load generator to
## CPU 1; prints a table with ratios.
## Settings: BENCH_SECS, BENCH_RUNS, BENCH_WARMUP_SECS, BENCH_COUNT_SECS, BENCH_SERVERS, BENCH_ROWS,
## RINGLET_ECHO (environment), or flags through BENCH_ARGS, e.g. `make bench-echo BENCH_ARGS=--quick`.
## Needs `perf` for the syscall column (Debian: apt-get install linux-perf); see bench/README.md.
bench-echo:
	@command -v perf >/dev/null 2>&1 || echo "bench: perf not found, the syscalls/rt column will be n/a (Debian: apt-get install linux-perf)"
	@[ "$$(nproc)" -ge 2 ] || { echo "bench: needs at least 2 CPUs (server and load generator are pinned apart)"; exit 1; }
	$(CARGO) build --release -p ringlet-bench
	@if [ -f examples/echo.rs ]; then \
		echo "$(CARGO) build --release --example echo"; \
		$(CARGO) build --release --example echo; \
	else \
		echo "bench: examples/echo.rs does not exist yet: the ringlet rows will be skipped (unless RINGLET_ECHO names an echo binary)"; \
	fi
	$(CARGO) build --release --example stream_echo
	$(CARGO_TARGET_DIR_OR_DEFAULT)/release/bench $(BENCH_ARGS)

## NATS benchmark: ringlet's broker (io_uring and epoll) side by side with nats-server (Debian
## package; its rows are skipped with a message when it is missing), same pinning; pub/sub
## throughput, request/reply latency, RSS of idle connections, server CPU per message, ratios.
## Settings: BENCH_SECS, BENCH_RUNS, BENCH_WARMUP_SECS, BENCH_NATS_SERVERS, BENCH_NATS_ROWS,
## BENCH_IDLE_CONNS, RINGLET_BROKER, NATS_SERVER (environment), or flags through
## BENCH_NATS_ARGS, e.g. `make bench-nats BENCH_NATS_ARGS=--quick`.
bench-nats:
	@[ "$$(nproc)" -ge 2 ] || { echo "bench: needs at least 2 CPUs (server and load generator are pinned apart)"; exit 1; }
	$(CARGO) build --release -p ringlet-bench
	$(CARGO_TARGET_DIR_OR_DEFAULT)/release/nats-bench $(BENCH_NATS_ARGS)

## Fuzz the parsers and codecs (needs `cargo install cargo-fuzz` and nightly), each target for
## FUZZ_SECS seconds: make fuzz, or some of them: make fuzz FUZZ_TARGET="frame line"
## (targets: parser connect subject config http frame line)
FUZZ_TARGET ?= parser connect subject config http frame line
FUZZ_SECS ?= 60
fuzz:
	cd fuzz && for t in $(FUZZ_TARGET); do \
		$(CARGO) $(NIGHTLY) fuzz run $$t -- -max_total_time=$(FUZZ_SECS) || exit 1; \
	done

## Nightly toolchain pieces for miri and check-nostd.
nightly:
	rustup toolchain install nightly --profile minimal --component miri,rust-src

clean:
	$(CARGO) clean
