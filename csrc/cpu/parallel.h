// Dynamic scheduling for the CPU kernels.
//
// at::parallel_for splits a range statically, one equal share per thread: when another
// process keeps one core busy, the thread on that core finishes last and the call takes
// as long as its share does on half a core.  Here every thread pulls small tasks from a
// shared counter instead, so a slowed thread simply takes fewer of them.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace alara {

// Runs fn(t) for every task t in [0, n_tasks), tasks handed out one at a time.
template <typename F>
void for_each_task(int64_t n_tasks, const F& fn) {
  if (n_tasks <= 0) return;
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), n_tasks);
  if (workers <= 1 || at::in_parallel_region()) {
    for (int64_t t = 0; t < n_tasks; ++t) fn(t);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < n_tasks;
         t = next.fetch_add(1, std::memory_order_relaxed))
      fn(t);
  });
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
