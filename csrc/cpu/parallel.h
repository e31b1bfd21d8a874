// Scheduling of the CPU kernels: one parallel region per operator call, dynamic tasks,
// run by a persistent pool of helper threads.
//
// Why one region.  Every parallel region ends in a join that waits for its slowest
// thread.  Beside another process that keeps threads busy (a second training job,
// DataLoader workers, a test suite), a thread of ours is often pushed off its core, and
// the join then waits a scheduler time slice (milliseconds) for it.  An operator call
// used to open about 50 regions (its kernels plus the ATen ops that shape the batch and
// combine the symmetric paths' channels) and on a 2-core machine shared with a process
// doing 2-thread tensor work, backprojection at batch 1 took 8-12x longer on 2 threads
// than on 1 (issue 23).  run_in_one_region() runs an operator's whole body on the calling
// thread with ATen kept serial there (its OpenMP thread count is 1 meanwhile), and each
// kernel's for_each_task hands its tasks to the calling thread's helpers.
//
// Why a persistent pool.  The region used to be an OpenMP team (at::parallel_for), whose
// end is a barrier: the caller waited for every helper to leave, and a helper that had
// just been pushed off its core cost the call 4-7 ms there (LoDoPaB BP at batch 1, 2
// threads beside the benchmark's torch load: 48-55 ms against 44-48 on 1 thread).  The
// pool's helpers outlive the call: the caller returns once its tasks are done, and idle
// helpers spin briefly, then sleep until the next task set (a woken sleeper is scheduled
// at once, where a yielding spinner waits out another thread's time slice).
//
// Why dynamic tasks.  at::parallel_for splits a range statically, one equal share per
// thread: when another process keeps one core busy, the thread on that core finishes last
// and the call takes as long as its share does on half a core.  Here every thread pulls
// small tasks from a shared counter instead, so a slowed thread simply takes fewer of them.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace alara {

namespace parallel_detail {

// The task sets of one leader thread, handed out one set at a time by the leader (the
// thread that runs the operator's body) to itself and its helpers.
class Region {
 public:
  // Runs fn(t) for every t in [0, n) on the leader and the helpers; returns when all are
  // done.  Leader only.
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
    wake();
    while (claim_and_run()) {
    }
    // tasks still running on helpers: spin a little (they usually end within
    // microseconds of each other), then sleep until the last one ends (woken then, where
    // a yield would wait out another process's time slice)
    if (spin_while([&] { return done_.load() < n; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      all_done_.wait(lock, [&] { return done_.load() >= n; });
    }
    fn_.store(nullptr);
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      error_flag_.clear();
      std::rethrow_exception(e);
    }
  }

  // A helper: runs tasks until stop().  Without a task it spins briefly (the leader's
  // next set usually follows within microseconds), then sleeps until a set is posted.
  void serve() {
    while (!stop_.load()) {
      if (claim_and_run()) continue;
      if (!spin_while([&] { return !stop_.load() && !has_task(); })) continue;
      std::unique_lock<std::mutex> lock(mutex_);
      wakeup_.wait(lock, [&] { return stop_.load() || has_task(); });
    }
  }

  void stop() {
    stop_.store(true);
    wake();
  }

 private:
  static constexpr uint64_t kClosed = 0xffffffffu;

  // Spins while `waiting()` holds, for at most ~50 us; returns whether it still holds.
  template <typename W>
  static bool spin_while(const W& waiting) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
    for (int i = 1; waiting(); ++i) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      if (i % 64 == 0 && std::chrono::steady_clock::now() > until) return true;
    }
    return false;
  }

  // Whether the current set has a task left to claim.
  bool has_task() const {
    const uint64_t cur = ticket_.load();
    return fn_.load() != nullptr && static_cast<int64_t>(cur & 0xffffffffu) < n_.load();
  }

  // Wakes the sleeping helpers after a new set or the stop was published (the lock orders
  // the publication before a sleeper's check of it: no wake-up is lost).
  void wake() {
    { std::lock_guard<std::mutex> lock(mutex_); }
    wakeup_.notify_all();
  }

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
        if (done_.fetch_add(1) + 1 == n) {  // the set's last task: wake a sleeping leader
          { std::lock_guard<std::mutex> lock(mutex_); }
          all_done_.notify_all();
        }
        return true;
      }
    }
  }

  std::atomic<const std::function<void(int64_t)>*> fn_{nullptr};
  std::atomic<int64_t> n_{0};
  std::atomic<uint64_t> ticket_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<bool> stop_{false};
  uint64_t set_ = 0;  // the leader's count of task sets
  std::atomic_flag error_flag_ = ATOMIC_FLAG_INIT;
  std::exception_ptr error_;
  std::mutex mutex_;
  std::condition_variable wakeup_, all_done_;
};

// The OpenMP thread count of the calling thread (an ICV, per thread) set to n for a
// scope: at 1, ATen's parallel_for runs inline, as inside a region.
class OmpThreads {
 public:
  explicit OmpThreads(int n) {
#ifdef _OPENMP
    saved_ = omp_get_max_threads();
    omp_set_num_threads(n);
#else
    (void)n;
#endif
  }
  ~OmpThreads() {
#ifdef _OPENMP
    omp_set_num_threads(saved_);
#endif
  }
  OmpThreads(const OmpThreads&) = delete;
  OmpThreads& operator=(const OmpThreads&) = delete;

 private:
  int saved_ = 1;
};

// One leader thread's helpers (workers - 1 threads) and their Region.  Each thread that
// calls the operators gets its own pool, as each gets its own OpenMP team.
class Pool {
 public:
  explicit Pool(int64_t workers) : workers_(workers) {
    for (int64_t i = 1; i < workers; ++i) {
      try {
        helpers_.emplace_back([this] {
          // (ATen inside a task stays on this thread; ATen sets a thread's OpenMP count
          // on its first call there, so that call comes first)
          (void)at::get_num_threads();
          OmpThreads serial(1);
          region_.serve();
        });
      } catch (const std::system_error&) {
        break;  // (no more threads to be had: the tasks are shared by those there are)
      }
    }
  }
  ~Pool() {
    region_.stop();
    for (std::thread& t : helpers_) t.join();
  }
  int64_t workers() const { return workers_; }
  Region& region() { return region_; }

 private:
  int64_t workers_;
  Region region_;
  std::vector<std::thread> helpers_;
};

// Pools made before a fork() belong to threads the child does not have: a fork starts a
// new generation, and the child leaves older pools alone (never joins their helpers).
inline std::atomic<uint64_t> g_fork_generation{0};

inline void count_forks() {
  static std::once_flag once;
#if defined(__unix__) || defined(__APPLE__)
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, [] { g_fork_generation.fetch_add(1); }); });
#else
  (void)once;
#endif
}

struct PoolSlot {
  Pool* pool = nullptr;
  uint64_t generation = 0;
  ~PoolSlot() {
    if (pool != nullptr && generation == g_fork_generation.load()) delete pool;
  }
};

// The calling thread's pool, with `workers` threads in all (the caller included).
inline Pool& pool_for_this_thread(int64_t workers) {
  static thread_local PoolSlot slot;
  count_forks();
  const uint64_t generation = g_fork_generation.load();
  if (slot.pool != nullptr && slot.generation != generation) slot.pool = nullptr;  // (forked: left alone)
  if (slot.pool == nullptr || slot.pool->workers() != workers) {
    delete slot.pool;
    slot.pool = new Pool(workers);
    slot.generation = generation;
  }
  return *slot.pool;
}

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

// Runs body() on the calling thread as one parallel region of at::get_num_threads()
// threads (the caller and its pool's helpers) and returns its result; the for_each_task
// loops inside it share those threads, and ATen runs serially on the caller meanwhile.
// Without threads to share, or already inside a region, it simply calls body().
template <typename F>
auto run_in_one_region(const F& body) -> decltype(body()) {
  using namespace parallel_detail;
  const int64_t workers = at::get_num_threads();
  if (workers <= 1 || t_leading != nullptr || t_in_task || at::in_parallel_region()) return body();
  Pool& pool = pool_for_this_thread(workers);
  struct Lead {  // (also when body() throws)
    explicit Lead(Region& r) { t_leading = &r; }
    ~Lead() { t_leading = nullptr; }
  } lead(pool.region());
  OmpThreads serial(1);
  return body();
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
