// The host-side rules of a held run (metal_held.mm), in plain C++ with no Apple header,
// so that tests/test_metal_static.py compiles and runs them on Linux:
//   run_in_windows  how a run's command buffers are paced: in windows behind gates;
//   Timeline        how a run's timestamps become per-launch samples, checked first.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>

#include "core/device.h"

namespace mb::metal {

// A held run commits its command buffers in windows. Each window starts with a gate: a
// command buffer of its own that waits until the host opens it, which the host does once
// the whole window is committed. The window's launches then run back to back, the GPU
// never waiting for the host between them, and the wait itself lies in the gate's command
// buffer, outside every sample. At most two windows are in flight: the host encodes the
// next while the GPU runs one, and finishes the older before it starts a third, so a run
// of any length stays within the queue's depth. Between two windows the GPU waits for the
// host when the host encodes more slowly than the GPU runs; no sample spans that wait,
// since a sample covers one launch.
//
// A run is made of units (a command buffer of launches, or one launch with the join
// before it), committed and finished in order. `Steps` does the Metal work:
//   size_t buffers(size_t unit)       command buffers unit `unit` commits (1 or 2)
//   void gate(size_t unit)            commits a new window's gate; `unit` is its first unit
//   void commit(size_t unit)          encodes and commits one unit
//   void open()                       opens the latest gate
//   void finish(size_t first, size_t end)
//                                     waits for the oldest gate and units [first, end), and
//                                     collects their times
//   void abandon()                    after an error: opens the latest gate and waits for
//                                     everything committed, so that nothing waits for ever
// `window` is the most command buffers one window commits besides its gate (at least 2).
template <class Steps>
void run_in_windows(size_t units, size_t window, Steps& steps) {
  struct Range {
    size_t first, end;
  };
  std::deque<Range> flight;  // committed windows not finished yet, oldest first
  try {
    for (size_t u = 0; u < units;) {
      if (flight.size() == 2) {
        steps.finish(flight.front().first, flight.front().end);
        flight.pop_front();
      }
      const size_t first = u;
      steps.gate(first);
      for (size_t used = 0; u < units; ++u) {
        const size_t need = steps.buffers(u);
        if (u > first && used + need > window) break;
        used += need;
        steps.commit(u);
      }
      steps.open();
      flight.push_back({first, u});
    }
    while (!flight.empty()) {
      steps.finish(flight.front().first, flight.front().end);
      flight.pop_front();
    }
  } catch (...) {
    steps.abandon();
    throw;
  }
}

// Per-launch samples from the start and end timestamps of launches that ran one after
// another (counter ticks, or seconds of GPUStartTime and GPUEndTime). Each launch's
// timestamps are checked before the order between launches, so that a timestamp the
// device did not take (Metal reports zero) is said to be missing, never mistaken for two
// launches that overlapped.
template <typename T>
class Timeline {
 public:
  // `who` starts every message ("[metal::timing] label: "); `what` names the timestamps.
  Timeline(std::string who, std::string what) : who_(std::move(who)), what_(std::move(what)) {}

  // Launch `i` ran from `start` to `end`; its time in nanoseconds, `ns_per_unit` a unit.
  uint64_t add(size_t i, T start, T end, double ns_per_unit) {
    if (!(start > 0) || !(end > 0))  // zero, or not a number
      throw DeviceError(who_ + "the device reported no " + what_ + " for launch " + std::to_string(i) +
                        " of a timed run (start " + shown(start) + ", end " + shown(end) + ")");
    if (end < start)
      throw DeviceError(who_ + "launch " + std::to_string(i) + " of a timed run ended before it started (" +
                        what_ + " " + shown(start) + " to " + shown(end) + ")");
    if (any_ && start < last_end_)
      throw DeviceError(who_ + "launch " + std::to_string(i) + " of a timed run started before launch " +
                        std::to_string(previous_) + " ended: consecutive samples overlap, so Metal ran them "
                        "concurrently; please report this with `metalbench doctor`");
    any_ = true;
    last_end_ = end;
    previous_ = i;
    return static_cast<uint64_t>(std::llround(static_cast<double>(end - start) * ns_per_unit));
  }

 private:
  static std::string shown(T v) { return std::to_string(v); }

  std::string who_, what_;
  bool any_ = false;
  T last_end_{};
  size_t previous_ = 0;
};

}  // namespace mb::metal
