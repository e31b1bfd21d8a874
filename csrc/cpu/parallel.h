// Scheduling of the CPU kernels: one parallel region per operator call, dynamic tasks.
//
// Why one region.  Every parallel region ends in a join that waits for its slowest
// thread.  Beside another process that keeps OpenMP threads busy (a second training job,
// DataLoader workers, a test suite), a thread of ours is often pushed off its core, and
// the join then waits a scheduler time slice (milliseconds) for it.  An operator call
// used to open about 50 regions (its kernels plus the ATen ops that shape the batch and
// combine the symmetric paths' channels) and on a 2-core machine shared with a process
// doing 2-thread tensor work, backprojection at batch 1 took 8-12x longer on 2 threads
// than on 1 (issue 23).  run_in_one_region() runs an operator's whole body on the calling
// thread inside a single region: the ATen glue runs there serially (ATen does not nest
// regions), and each kernel's for_each_task hands its tasks to the region's other threads,
// which wait for them meanwhile, yielding their core.
//
// Why dynamic tasks.  at::parallel_for splits a range statically, one equal share per
// thread: when another process keeps one core busy, the thread on that core finishes last
// and the call takes as long as its share does on half a core.  Here every thread pulls
// small tasks from a shared counter instead, so a slowed thread simply takes fewer of them.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <thread>
#include <type_traits>
#include <utility>

namespace alara {

namespace parallel_detail {

// The task sets of one region, handed out one set at a time by the thread that runs the
// operator's body (the leader) to every thread of the region (the leader included).
class Region {
 public:
  // Runs fn(t) for every t in [0, n) on the region's threads; returns when all are done.
  void run(int64_t n, const std::function<void(int64_t)>& fn) {
    TORCH_CHECK(static_cast<uint64_t>(n) < kClosed, "alara: too many tasks in one loop (", n, ")");
    // A ticket is (set number << 32) | next task: a thread claims a task by advancing it
    // with a compare-and-swap, so a claim based on an earlier ticket fails.  The new set
    // is closed (no task index is valid) while its function and size are stored.
    const uint64_t set = ++set_;
    ticket_.store((set << 32) | kClosed);
    fn_.store(&fn);
    n_.store(n);
    done_.store(0);
    ticket_.store(set << 32);
    while (claim_and_run()) {
    }
    while (done_.load() < n) std::this_thread::yield();  // tasks still running elsewhere
    fn_.store(nullptr);
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

  // The other threads: run tasks until the leader's body has returned.
  void serve() {
    while (!finished_.load()) {
      if (!claim_and_run()) std::this_thread::yield();
    }
  }

  void finish() { finished_.store(true); }

 private:
  static constexpr uint64_t kClosed = 0xffffffffu;

  // Claims and runs one task of the current set; false when none is left.
  bool claim_and_run() {
    uint64_t cur = ticket_.load();
    for (;;) {
      // fn_ and n_ are read after the ticket: a ticket with a valid index was stored after
      // its set's function and size, and a successful claim proves that the ticket, hence
      // the set, was still current.
      const std::function<void(int64_t)>* fn = fn_.load();
      const int64_t n = n_.load();
      const int64_t t = static_cast<int64_t>(cur & 0xffffffffu);
      if (fn == nullptr || t >= n) return false;
      if (ticket_.compare_exchange_weak(cur, cur + 1)) {
        try {
          (*fn)(t);
        } catch (...) {
          if (!error_flag_.test_and_set()) error_ = std::current_exception();
        }
        done_.fetch_add(1);
        return true;
      }
    }
  }

  std::atomic<const std::function<void(int64_t)>*> fn_{nullptr};
  std::atomic<int64_t> n_{0};
  std::atomic<uint64_t> ticket_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<bool> finished_{false};
  uint64_t set_ = 0;  // the leader's count of task sets
  std::atomic_flag error_flag_ = ATOMIC_FLAG_INIT;
  std::exception_ptr error_;
};

// The region whose body this thread runs (the leader), and whether this thread is inside
// a task (where nested loops run serially).
inline thread_local Region* t_leading = nullptr;
inline thread_local bool t_in_task = false;

struct TaskFlag {
  bool saved = t_in_task;
  TaskFlag() { t_in_task = true; }
  ~TaskFlag() { t_in_task = saved; }
};

}  // namespace parallel_detail

// Runs body() on the calling thread inside one parallel region of at::get_num_threads()
// threads and returns its result; the for_each_task loops inside it share the region's
// threads.  Without threads to share, or already inside a region, it simply calls body().
template <typename F>
auto run_in_one_region(const F& body) -> decltype(body()) {
  using namespace parallel_detail;
  const int64_t workers = at::get_num_threads();
  if (workers <= 1 || t_leading != nullptr || t_in_task || at::in_parallel_region()) return body();
  Region region;
  std::conditional_t<std::is_void_v<decltype(body())>, int, decltype(body())> result{};
  // (grain 1: index 0 goes to the calling thread, the master of the OpenMP team)
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t) {
    if (begin != 0) {
      region.serve();
      return;
    }
    struct Lead {  // also when body() throws: the other threads must stop serving
      Region& r;
      explicit Lead(Region& r_) : r(r_) { t_leading = &r; }
      ~Lead() {
        t_leading = nullptr;
        r.finish();
      }
    } lead(region);
    if constexpr (std::is_void_v<decltype(body())>) {
      body();
    } else {
      result = body();
    }
  });
  if constexpr (!std::is_void_v<decltype(body())>) return result;
}

// Runs fn(t) for every task t in [0, n_tasks), tasks handed out one at a time: by the
// region that run_in_one_region opened on this thread, else in a region of its own.
template <typename F>
void for_each_task(int64_t n_tasks, const F& fn) {
  using namespace parallel_detail;
  if (n_tasks <= 0) return;
  auto task = [&](int64_t t) {
    TaskFlag in_task;
    fn(t);
  };
  if (t_leading != nullptr && !t_in_task) {
    t_leading->run(n_tasks, std::function<void(int64_t)>(task));
    return;
  }
  if (n_tasks == 1 || at::get_num_threads() <= 1 || t_in_task || at::in_parallel_region()) {
    for (int64_t t = 0; t < n_tasks; ++t) task(t);
    return;
  }
  run_in_one_region([&] { for_each_task(n_tasks, fn); });
}

// Runs fn(begin, end) over [0, n) in chunks of `chunk` items, scheduled dynamically.
template <typename F>
void for_each_chunk(int64_t n, int64_t chunk, const F& fn) {
  chunk = std::max<int64_t>(chunk, 1);
  for_each_task((n + chunk - 1) / chunk, [&](int64_t t) {
    fn(t * chunk, std::min(n, (t + 1) * chunk));
  });
}

}  // namespace alara
