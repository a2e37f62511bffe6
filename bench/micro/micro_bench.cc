// Micro benches of the hot-path pieces, called through the project's own
// headers (Google Benchmark). Run: build/bench/micro/micro_bench
// --benchmark_out=results.json --benchmark_out_format=json
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include <liburing.h>
#include <sys/mman.h>

#include "arctic/alloc.h"
#include "arctic/config.h"
#include "arctic/relay.h"
#include "arctic/stats.h"
#include "arctic/worker.h"

// user_data encoding and the completion dispatch switch
static void BM_UserDataDispatch(benchmark::State &state)
{
	static const unsigned ops[] = {OP_RECV | 0, OP_SEND | 1, OP_RECV | 1, OP_SEND | 0,
				       OP_CONNECT, OP_ACCEPT, OP_POLL_IN | 1, OP_TICK};
	uint64_t sum = 0;
	uint32_t i = 0;
	for (auto _ : state) {
		uint64_t ud = relay_ud(ops[i & 7], i & 0xffff, i >> 3);
		switch (relay_ud_op(ud) & ~1u) {
		case OP_RECV: sum += relay_ud_slot(ud); break;
		case OP_SEND: sum += relay_ud_gen(ud); break;
		case OP_CONNECT: sum += 3; break;
		default: sum += relay_ud_op(ud); break;
		}
		i++;
		benchmark::DoNotOptimize(sum);
	}
	state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_UserDataDispatch);

// Returning a relay buffer to the provided-buffer ring (worker_buf_put)
static void BM_BufRecycle(benchmark::State &state)
{
	struct io_uring ring;
	if (io_uring_queue_init(8, &ring, 0) < 0) {
		state.SkipWithError("io_uring unavailable");
		return;
	}
	static struct worker w; // large: keep it off the stack
	std::memset(static_cast<void *>(&w), 0, sizeof(w)); // plain data but for an atomic flag
	w.buf_count = 256;
	w.buf_size = 4096;
	w.br = (struct io_uring_buf_ring *)mmap(nullptr, w.buf_count * sizeof(struct io_uring_buf),
					       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	w.bufs = (uint8_t *)std::calloc(w.buf_count, w.buf_size);
	w.wait_head = w.wait_tail = RELAY_NONE;
	struct io_uring_buf_reg reg;
	std::memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)w.br;
	reg.ring_entries = w.buf_count;
	if (io_uring_register_buf_ring(&ring, &reg, 0) < 0) {
		state.SkipWithError("provided buffer rings unavailable");
		return;
	}
	io_uring_buf_ring_init(w.br);
	uint16_t bid = 0;
	for (auto _ : state) {
		worker_buf_put(&w, bid);
		bid = (uint16_t)((bid + 1) & (w.buf_count - 1));
	}
	state.SetItemsProcessed(state.iterations());
	io_uring_unregister_buf_ring(&ring, 0);
	io_uring_queue_exit(&ring);
	munmap(w.br, w.buf_count * sizeof(struct io_uring_buf));
	std::free(w.bufs);
}
BENCHMARK(BM_BufRecycle);

// Per-worker counter update (single writer, no lock prefix)
static void BM_StatsAdd(benchmark::State &state)
{
	static struct worker_stats s;
	for (auto _ : state) {
		stats_add(&s, ST_BYTES_C2U, 1460);
		stats_add(&s, ST_LOOPS, 1);
	}
	state.SetItemsProcessed(state.iterations() * 2);
}
BENCHMARK(BM_StatsAdd);

// The stats thread summing N workers' counters
static void BM_StatsAggregate(benchmark::State &state)
{
	size_t n = (size_t)state.range(0);
	std::vector<struct worker_stats> ws(n);
	std::memset((void *)ws.data(), 0, n * sizeof(struct worker_stats));
	for (auto _ : state) {
		struct stats_snap total, one;
		std::memset(&total, 0, sizeof(total));
		for (size_t i = 0; i < n; i++) {
			stats_read(&ws[i], &one);
			stats_sum(&total, &one);
		}
		benchmark::DoNotOptimize(total);
	}
	state.SetItemsProcessed(state.iterations() * (int64_t)n);
}
BENCHMARK(BM_StatsAggregate)->Arg(2)->Arg(64);

// Connection slot alloc/free from the worker's slab in its node arena...
static void BM_SlotAllocFree(benchmark::State &state)
{
	mem_init(1);
	static struct worker w;
	static struct config cfg;
	cfg_defaults(&cfg);
	std::memset(static_cast<void *>(&w), 0, sizeof(w)); // plain data but for an atomic flag
	w.cfg = &cfg;
	w.cap = 4096;
	w.conns = (struct conn *)mem_alloc(mem_arena(0), w.cap * sizeof(struct conn), 64);
	w.free_head = RELAY_NONE;
	size_t batch = (size_t)state.range(0);
	std::vector<struct conn *> held(batch);
	for (auto _ : state) {
		for (size_t i = 0; i < batch; i++)
			held[i] = conn_slot_alloc(&w);
		for (size_t i = 0; i < batch; i++)
			conn_slot_free(&w, held[i]);
	}
	state.SetItemsProcessed(state.iterations() * (int64_t)batch);
	mem_free(w.conns);
}
BENCHMARK(BM_SlotAllocFree)->Arg(1)->Arg(256);

// ...against calloc/free of the same size (a slot is handed out zeroed)
static void BM_MallocFree(benchmark::State &state)
{
	size_t batch = (size_t)state.range(0);
	std::vector<void *> held(batch);
	for (auto _ : state) {
		for (size_t i = 0; i < batch; i++)
			held[i] = std::calloc(1, sizeof(struct conn)); /* a slot starts zeroed too */
		for (size_t i = 0; i < batch; i++)
			std::free(held[i]);
	}
	state.SetItemsProcessed(state.iterations() * (int64_t)batch);
}
BENCHMARK(BM_MallocFree)->Arg(1)->Arg(256);

BENCHMARK_MAIN();
