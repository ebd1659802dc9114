// metalbench._core: the Python face of the native core. Translation only: every
// decision about what to run and how to judge it is made in Python, every timing
// loop in csrc/core.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <type_traits>

#include "core/abi.h"
#include "core/checks.h"
#include "core/device.h"
#include "core/measure.h"
#include "core/registry.h"
#include "core/settings.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using Array = nb::ndarray<nb::numpy, uint64_t, nb::ndim<1>>;
// How the arguments and results below read in signatures and the type stub.
using AnyDict = nb::typed<nb::dict, nb::str, nb::any>;
using Args = nb::typed<nb::list, std::variant<std::shared_ptr<mb::Buffer>, nb::bytes>>;
using Resets = nb::typed<nb::list, nb::typed<nb::tuple, std::shared_ptr<mb::Buffer>, std::shared_ptr<mb::Buffer>>>;

nb::dict info_dict(const mb::DeviceInfo& i) {
  nb::dict d;
  d["backend"] = i.backend;
  d["index"] = i.index;
  d["name"] = i.name;
  d["vendor"] = i.vendor;
  d["driver"] = i.driver;
  d["compute_units"] = i.compute_units;
  d["memory_bytes"] = i.memory_bytes;
  d["cache_bytes"] = i.cache_bytes;
  d["max_group_size"] = i.max_group_size;
  d["unified_memory"] = i.unified_memory;
  d["cpu"] = i.cpu;
  d["view_alignment"] = i.view_alignment;
  d["max_held_launches"] = i.max_held_launches;
  d["peak_bandwidth"] = i.peak_bandwidth;
  d["peak_bandwidth_source"] = i.peak_bandwidth_source;
  d["clock_source"] = i.clock_source;
  d["timing_source"] = i.timing_source;
  d["matrix_unit"] = i.matrix_unit;
  d["matrix_unit_detail"] = i.matrix_unit_detail;
  d["warpgroup_mma"] = i.warpgroup_mma;
  d["warpgroup_mma_detail"] = i.warpgroup_mma_detail;
  d["thread_block_clusters"] = i.thread_block_clusters;
  d["thread_block_clusters_detail"] = i.thread_block_clusters_detail;
  d["bfloat16"] = i.bfloat16;
  d["bfloat16_detail"] = i.bfloat16_detail;
  return d;
}

nb::dict stats_dict(const mb::Stats& s) {
  nb::dict d;
  d["count"] = s.count;
  d["median"] = s.median;
  d["mean"] = s.mean;
  d["stdev"] = s.stdev;
  d["min"] = s.min;
  d["max"] = s.max;
  d["q1"] = s.q1;
  d["q3"] = s.q3;
  d["rel_stdev"] = s.rel_stdev;
  d["ci_lo"] = s.ci_lo;
  d["ci_hi"] = s.ci_hi;
  return d;
}

nb::dict clock_dict(const mb::ClockResult& c) {
  nb::dict d = stats_dict(c.stats);
  d["stop"] = c.stop;
  d["discarded"] = c.discarded;
  d["round"] = c.round;
  return d;
}

nb::object reading(const mb::ClockReading& r) {
  if (!r.known) return nb::none();
  nb::dict d;
  d["mhz"] = r.mhz;
  d["max_mhz"] = r.max_mhz;
  d["throttled"] = r.throttled;
  return d;
}

// _core.abi(): MBParams and the op codes as this build compiled them.
nb::dict abi_dict() {
  nb::dict fields;
  for (const mb::ParamsField& f : mb::params_fields()) {
    nb::dict field;
    field["offset"] = f.offset;
    field["format"] = std::string(1, f.format);
    fields[f.name] = field;
  }
  nb::dict params;
  params["size"] = sizeof(MBParams);
  params["fields"] = fields;
  nb::dict ops;
  for (const mb::OpCode& o : mb::op_codes()) ops[o.name] = o.value;
  nb::dict out;
  out["params"] = params;
  out["ops"] = ops;
  return out;
}

mb::ClockKind clock_kind(const std::string& name) {
  if (name == "gpu") return mb::ClockKind::gpu;
  if (name == "batch") return mb::ClockKind::batch;
  if (name == "cpu") return mb::ClockKind::cpu;
  throw mb::UsageError("[core::measure] rank_by must be 'batch', 'gpu' or 'cpu', not '" + name + "'");
}

// A field of MeasureConfig's stop rule as a property of MeasureConfig itself, so that
// Python sees one flat set of settings, named as Device.measure's keywords.
template <typename T>
void stop_rule_field(nb::class_<mb::MeasureConfig>& config, const char* name, T mb::StopRule::*field,
                     const char* doc) {
  config.def_prop_rw(
      name, [field](const mb::MeasureConfig& c) { return c.stop.*field; },
      [field](mb::MeasureConfig& c, T value) { c.stop.*field = value; }, doc);
}

// Hands a vector's storage to numpy without copying it.
Array to_numpy(std::vector<uint64_t>&& v) {
  auto* heap = new std::vector<uint64_t>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<uint64_t>*>(p); });
  return Array(heap->data(), {heap->size()}, owner);
}

// `who` is the "[core::operation] label: " an error starts with.
std::array<uint32_t, 3> dim3(const std::vector<uint32_t>& v, const std::string& who, const char* what) {
  if (v.empty() || v.size() > 3)
    throw mb::UsageError(who + what + " takes 1 to 3 dimensions, got " + std::to_string(v.size()));
  std::array<uint32_t, 3> out{1, 1, 1};
  for (size_t i = 0; i < v.size(); ++i) out[i] = v[i];
  return out;
}

// Records which device made `made` (and, for a buffer, the allocation it lies in).
template <class T>
std::shared_ptr<T> stamped(std::shared_ptr<T> made, const mb::Device& d) {
  made->origin.device = d.serial;
  if constexpr (std::is_same_v<T, mb::Buffer>) made->origin.memory = made.get();
  return made;
}

// A kernel or buffer of another device (or of one since closed) fails inside the
// driver with a code that names nothing; refused here by name instead.
void check_origin(const mb::Origin& origin, const mb::Device& d, const std::string& who) {
  if (origin.device != 0 && origin.device != d.serial)
    throw mb::UsageError(who + " belongs to another device, or to one since closed: make it on this device");
}

// Arguments arrive as a list of Buffer objects and bytes-like objects (a packed
// params struct); they are converted while the GIL is held. `shape` is a launch
// whose kernel and dimensions are set: measure() converts hundreds of slots that
// share them.
mb::Launch make_launch(const mb::Device& d, const mb::Launch& shape, const nb::list& args) {
  check_origin(shape.kernel->origin, d, "[core::launch] kernel " + shape.kernel->label());
  mb::Launch l;
  l.kernel = shape.kernel;
  l.groups = shape.groups;
  l.threads = shape.threads;
  l.args.reserve(args.size());
  size_t i = 0;
  for (nb::handle h : args) {
    if (nb::isinstance<mb::Buffer>(h)) {
      auto buffer = nb::cast<std::shared_ptr<mb::Buffer>>(h);
      if (buffer)
        check_origin(buffer->origin, d,
                     "[core::launch] " + shape.kernel->label() + ": argument " + std::to_string(i) + ", a buffer,");
      l.args.emplace_back(std::move(buffer));
    } else if (nb::isinstance<nb::bytes>(h)) {
      auto b = nb::cast<nb::bytes>(h);
      const auto* p = static_cast<const uint8_t*>(b.data());
      l.args.emplace_back(std::vector<uint8_t>(p, p + b.size()));
    } else {
      throw mb::UsageError("[core::launch] " + shape.kernel->label() + ": argument " + std::to_string(i) +
                           " must be a Buffer or bytes, not " + std::string(nb::type_name(h.type()).c_str()));
    }
    ++i;
  }
  return l;
}

// A launch of `kernel` with these dimensions and no arguments yet.
mb::Launch launch_shape(std::shared_ptr<mb::Kernel> kernel, const std::vector<uint32_t>& groups,
                        const std::vector<uint32_t>& threads) {
  const std::string who = "[core::launch] " + kernel->label() + ": ";
  mb::Launch l;
  l.kernel = std::move(kernel);
  l.groups = dim3(groups, who, "groups");
  l.threads = dim3(threads, who, "threads");
  return l;
}

// `args` is one launch's argument list, or a list of such lists: one launch per slot.
// Every slot must take the same arguments (count, and buffer or bytes of one size at each
// place): a backend sets a kernel's arguments slot by slot, so a short slot would run
// with the arguments the slot before it left behind.
void check_alike(const std::vector<mb::Launch>& slots) {
  const auto& first = slots.front().args;
  for (size_t s = 1; s < slots.size(); ++s) {
    const auto& args = slots[s].args;
    const std::string who = "[core::measure] " + slots.front().kernel->label() + ": slot " + std::to_string(s);
    if (args.size() != first.size())
      throw mb::UsageError(who + " has " + std::to_string(args.size()) + " arguments and slot 0 " +
                           std::to_string(first.size()) + ": every slot takes the same arguments");
    for (size_t i = 0; i < args.size(); ++i) {
      const auto* bytes = std::get_if<std::vector<uint8_t>>(&args[i]);
      const auto* bytes0 = std::get_if<std::vector<uint8_t>>(&first[i]);
      if ((bytes == nullptr) != (bytes0 == nullptr) || (bytes && bytes->size() != bytes0->size()))
        throw mb::UsageError(who + ": argument " + std::to_string(i) + " is not of slot 0's kind and size "
                             "(a buffer, or bytes of one length): every slot takes the same arguments");
    }
  }
}

std::vector<mb::Launch> make_slots(const mb::Device& d, const std::shared_ptr<mb::Kernel>& kernel,
                                   const nb::list& args, const std::vector<uint32_t>& groups,
                                   const std::vector<uint32_t>& threads) {
  const mb::Launch shape = launch_shape(kernel, groups, threads);
  std::vector<mb::Launch> out;
  bool nested = args.size() > 0 && nb::isinstance<nb::list>(args[0]);
  if (!nested) {
    out.push_back(make_launch(d, shape, args));
    return out;
  }
  out.reserve(args.size());
  for (nb::handle h : args) {
    if (!nb::isinstance<nb::list>(h))
      throw mb::UsageError("[core::measure] args: give one list of arguments, or a list of such lists (one per slot)");
    out.push_back(make_launch(d, shape, nb::borrow<nb::list>(h)));
  }
  check_alike(out);
  return out;
}

std::vector<mb::Define> to_defines(const nb::dict& defines) {
  std::vector<mb::Define> out;
  for (auto [k, v] : defines) out.push_back({nb::str(k).c_str(), nb::str(v).c_str()});
  return out;
}

size_t checked_bytes(const mb::Buffer& buf, size_t n, size_t offset, const char* verb) {
  if (offset > buf.bytes() || n > buf.bytes() - offset)
    throw mb::UsageError(std::string("[core::") + verb + "] cannot " + verb + " " + std::to_string(n) +
                         " bytes at offset " + std::to_string(offset) + " of a " + std::to_string(buf.bytes()) +
                         "-byte buffer");
  return n;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "metalbench native core: devices, kernels, buffers and timing";

  static nb::exception<mb::UsageError> usage_error(m, "UsageError", PyExc_ValueError);
  static nb::exception<mb::UnavailableError> unavailable_error(m, "UnavailableError", PyExc_RuntimeError);
  static nb::exception<mb::DeviceError> device_error(m, "DeviceError", PyExc_RuntimeError);
  // Named after the module as imported (metalbench._core, or _core where the build
  // imports it to write the type stub), so that the stub lists it as the module's own.
  const std::string compile_error_name = nb::cast<std::string>(m.attr("__name__")) + ".CompileError";
  static nb::object compile_error = nb::borrow(
      PyErr_NewExceptionWithDoc(compile_error_name.c_str(),
                                "A kernel failed to compile; `log` holds the compiler output.",
                                PyExc_RuntimeError, nullptr));
  compile_error.attr("log") = "";  // each raised error sets its own; declared here for the stub
  m.attr("CompileError") = compile_error;
  // CompileError carries the compiler log as an attribute, which nb::exception
  // cannot attach, so it is raised by hand.
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const mb::CompileError& e) {
      nb::object exc = compile_error(nb::str(e.what()));
      exc.attr("log") = nb::str(e.log.c_str(), e.log.size());
      PyErr_SetObject(compile_error.ptr(), exc.ptr());
    }
  });

  // The measurement settings with the core's defaults (csrc/core/measure.h), which
  // Device.measure's keywords and metalbench's Settings take theirs from.
  static const mb::MeasureConfig defaults;
  nb::class_<mb::MeasureConfig> config(m, "MeasureConfig",
                                       "The settings of Device.measure, made with the core's defaults; check() "
                                       "refuses values out of range as Device.measure would.");
  config.def(nb::init<>())
      .def_rw("warmup", &mb::MeasureConfig::warmup, "Untimed launches first.");
  stop_rule_field(config, "min_samples", &mb::StopRule::min_samples,
                  "Fewest samples of each clock; the ranking clock's must also span min_time.");
  stop_rule_field(config, "max_samples", &mb::StopRule::max_samples, "Most samples of each clock.");
  stop_rule_field(config, "min_time", &mb::StopRule::min_time,
                  "Seconds of sampled time the ranking clock needs before it may stop.");
  stop_rule_field(config, "max_time", &mb::StopRule::max_time,
                  "Seconds of wall time one measurement may take, all clocks together.");
  stop_rule_field(config, "max_noise", &mb::StopRule::max_noise,
                  "The ranking clock stops once its samples' relative standard deviation is at most this.");
  config
      .def_prop_rw(
          "rank_by", [](const mb::MeasureConfig& c) { return std::string(mb::clock_name(c.rank_by)); },
          [](mb::MeasureConfig& c, const std::string& v) { c.rank_by = clock_kind(v); },
          "The clock that ranks: 'batch', 'gpu' or 'cpu'.")
      .def_rw("batch_time", &mb::MeasureConfig::batch_time, "Seconds of GPU time a batch sample spans at least.")
      .def_rw("max_batch", &mb::MeasureConfig::max_batch, "Most launches in one batch sample.")
      .def_rw("min_clock_fraction", &mb::MeasureConfig::min_clock_fraction,
              "Samples taken below this fraction of the maximum clock are discarded.")
      .def_rw("ramp_idle", &mb::MeasureConfig::ramp_idle,
              "Seconds the device sat idle (since its last measurement) after which the warm-up lasts ramp_time.")
      .def_rw("ramp_time", &mb::MeasureConfig::ramp_time,
              "Seconds of warm-up launches after an idle spell, whatever warmup and max_time say.")
      .def("check", &mb::check_config, "Raises UsageError naming the first setting out of range.");
  m.attr("measure_version") = mb::kMeasureVersion;

  nb::class_<mb::Buffer>(m, "Buffer", "Device memory; copies to and from numpy arrays.")
      .def_prop_ro("nbytes", &mb::Buffer::bytes)
      .def(
          "write",
          [](mb::Buffer& b, nb::ndarray<nb::c_contig, nb::device::cpu> a, size_t offset) {
            size_t n = checked_bytes(b, a.nbytes(), offset, "write");
            nb::gil_scoped_release nogil;
            b.write(a.data(), n, offset);
          },
          "array"_a, "offset"_a = 0, "Copies a C-contiguous array into the buffer at `offset` bytes.")
      .def(
          "read",
          [](const mb::Buffer& b, nb::ndarray<nb::c_contig, nb::device::cpu> out, size_t offset) {
            size_t n = checked_bytes(b, out.nbytes(), offset, "read");
            nb::gil_scoped_release nogil;
            b.read(out.data(), n, offset);
          },
          "out"_a, "offset"_a = 0, "Fills the C-contiguous array `out` from the buffer at `offset` bytes.")
      .def(
          "fill",
          [](mb::Buffer& b, uint8_t value) {
            nb::gil_scoped_release nogil;
            b.fill(value);
          },
          "value"_a, "Sets every byte of the buffer.")
      .def(
          "copy_from",
          [](mb::Buffer& b, const mb::Buffer& src) {
            if (src.origin.device != 0 && b.origin.device != 0 && src.origin.device != b.origin.device)
              throw mb::UsageError("[core::copy] the source buffer belongs to another device (or to one since "
                                   "closed): copy through host memory, read() then write()");
            if (src.origin.memory != nullptr && src.origin.memory == b.origin.memory &&
                src.origin.offset < b.origin.offset + b.bytes() && b.origin.offset < src.origin.offset + src.bytes())
              throw mb::UsageError("[core::copy] the source and the target share memory (the same buffer, or "
                                   "overlapping views of one): copy through another buffer");
            if (src.bytes() != b.bytes())
              throw mb::UsageError("[core::copy] cannot copy a " + std::to_string(src.bytes()) +
                                   "-byte buffer into a " + std::to_string(b.bytes()) + "-byte one");
            nb::gil_scoped_release nogil;
            b.copy_from(src);
          },
          "source"_a, "Copies all of `source` (same device, same size) into this buffer on the device.")
      .def(
          "view",
          [](mb::Buffer& b, size_t offset, size_t nbytes) {
            if (nbytes == 0 || offset > b.bytes() || nbytes > b.bytes() - offset)
              throw mb::UsageError("[core::view] cannot view " + std::to_string(nbytes) + " bytes at offset " +
                                   std::to_string(offset) + " of a " + std::to_string(b.bytes()) + "-byte buffer");
            auto made = b.view(offset, nbytes);
            made->origin = {b.origin.device, b.origin.memory, b.origin.offset + offset};
            return made;
          },
          "offset"_a, "nbytes"_a,
          "Bytes [offset, offset + nbytes) as a buffer sharing this one's memory; `offset` must be a multiple of "
          "the device's view_alignment.");

  nb::class_<mb::Kernel>(m, "Kernel", "A compiled kernel or a vendor-library builtin.")
      .def_prop_ro("label", &mb::Kernel::label)
      .def_prop_ro("max_group_size", &mb::Kernel::max_group_size)
      .def_prop_ro("simd_width", &mb::Kernel::simd_width);

  nb::class_<mb::Device>(m, "Device", "One GPU (or OpenCL device) opened by a backend.")
      .def_prop_ro("info", [](const mb::Device& d) -> AnyDict { return info_dict(d.info()); })
      .def(
          "compile",
          [](mb::Device& d, const std::string& source, const std::string& entry, const AnyDict& defines,
             const std::string& label) {
            auto defs = to_defines(defines);
            const std::string& who = label.empty() ? entry : label;
            mb::check_defines(defs, who);
            nb::gil_scoped_release nogil;
            return stamped(d.compile(source, entry, defs, who), d);
          },
          "source"_a, "entry"_a, "defines"_a = nb::dict(), "label"_a = "",
          "Compiles `entry` from `source` with `defines` as macros; raises CompileError with the log.")
      .def(
          "builtin",
          [](mb::Device& d, const std::string& name, const std::string& label, const AnyDict& defines,
             std::shared_ptr<mb::Kernel> first) {
            auto defs = to_defines(defines);
            mb::check_defines(defs, label);
            if (first) check_origin(first->origin, d, "[core::builtin] " + label + ": its first kernel");
            nb::gil_scoped_release nogil;
            return stamped(d.builtin(name, label, defs, std::move(first)), d);
          },
          "name"_a, "label"_a, "defines"_a = nb::dict(), "first"_a.none() = nb::none(),
          "A vendor-library routine (cuBLAS, MPS) that takes the GEMM kernel arguments; `defines` are the "
          "variant's (MB_DTYPE gives the element type). `first`, a kernel compiled on this device, runs before "
          "the library call in every launch, with its arguments and geometry (the dequantize step of a "
          "quantized B); the two are timed as one launch.")
      .def(
          "load",
          [](mb::Device& d, const std::string& path, const std::string& entry, const std::string& label) {
            nb::gil_scoped_release nogil;
            return stamped(d.load(path, entry, label.empty() ? entry : label), d);
          },
          "path"_a, "entry"_a, "label"_a = "",
          "Kernel `entry` of a precompiled library file (a .metallib on Metal).")
      .def(
          "allocate",
          [](mb::Device& d, size_t nbytes) {
            if (nbytes == 0) throw mb::UsageError("[core::allocate] cannot allocate an empty buffer");
            nb::gil_scoped_release nogil;
            return stamped(d.allocate(nbytes), d);
          },
          "nbytes"_a)
      .def(
          "run",
          [](mb::Device& d, std::shared_ptr<mb::Kernel> k, const Args& args, const std::vector<uint32_t>& groups,
             const std::vector<uint32_t>& threads) {
            mb::Launch l = make_launch(d, launch_shape(std::move(k), groups, threads), args);
            mb::check_launch(d, l);
            nb::gil_scoped_release nogil;
            d.run(l);
          },
          "kernel"_a, "args"_a, "groups"_a, "threads"_a, "Launches once and waits for completion.")
      .def(
          "measure",
          [](mb::Device& d, std::shared_ptr<mb::Kernel> k, const nb::list& args, const std::vector<uint32_t>& groups,
             const std::vector<uint32_t>& threads, int warmup, int min_samples, int max_samples, double min_time,
             double max_time, double max_noise, const std::string& rank_by, double batch_time, size_t max_batch,
             double min_clock_fraction, const Resets& resets, bool rank_only, bool final_round,
             double launch_hint, double ramp_idle, double ramp_time) -> AnyDict {
            std::vector<mb::Launch> slots = make_slots(d, k, args, groups, threads);
            std::vector<mb::Reset> pairs;
            for (nb::handle h : resets) {
              // Checked before the casts, whose own error would read only "std::bad_cast".
              if (!nb::isinstance<nb::tuple>(h) || nb::len(h) != 2 || !nb::isinstance<mb::Buffer>(h[0]) ||
                  !nb::isinstance<mb::Buffer>(h[1]))
                throw mb::UsageError("[core::measure] resets: each is a (target, source) pair of buffers");
              auto pair = nb::borrow<nb::tuple>(h);
              pairs.push_back({nb::cast<std::shared_ptr<mb::Buffer>>(pair[0]),
                               nb::cast<std::shared_ptr<mb::Buffer>>(pair[1])});
              for (const auto& buffer : {pairs.back().target, pairs.back().source})
                if (buffer) check_origin(buffer->origin, d, "[core::measure] resets: a buffer");
            }
            mb::MeasureConfig cfg;
            cfg.warmup = warmup;
            cfg.stop = {max_noise, min_samples, min_time, max_time, max_samples};
            cfg.rank_by = clock_kind(rank_by);
            cfg.batch_time = batch_time;
            cfg.max_batch = max_batch;
            cfg.min_clock_fraction = min_clock_fraction;
            cfg.rank_only = rank_only;
            cfg.final_round = final_round;
            cfg.launch_hint = launch_hint;
            cfg.ramp_idle = ramp_idle;
            cfg.ramp_time = ramp_time;
            mb::Measurement r;
            {
              nb::gil_scoped_release nogil;
              r = mb::measure(d, slots, pairs, cfg);
            }
            nb::dict out;
            out["gpu"] = clock_dict(r.gpu);
            out["batch"] = clock_dict(r.batch);
            out["cpu"] = clock_dict(r.cpu);
            out["gpu_ns"] = to_numpy(std::move(r.gpu.ns));
            out["batch_ns"] = to_numpy(std::move(r.batch.ns));
            out["cpu_ns"] = to_numpy(std::move(r.cpu.ns));
            out["warmup"] = r.warmup;
            out["batch_size"] = r.batch_size;
            out["first_slot"] = r.first_slot;
            out["last_round"] = r.last_round;
            out["final_round"] = r.final_round;
            out["rank_by"] = rank_by;
            nb::dict clock;
            clock["low"] = reading(r.clock_low);
            clock["high"] = reading(r.clock_high);
            out["clock"] = clock;
            return out;
          },
          "kernel"_a, "args"_a, "groups"_a, "threads"_a, nb::kw_only(), "warmup"_a = defaults.warmup,
          "min_samples"_a = defaults.stop.min_samples, "max_samples"_a = defaults.stop.max_samples,
          "min_time"_a = defaults.stop.min_time, "max_time"_a = defaults.stop.max_time,
          "max_noise"_a = defaults.stop.max_noise, "rank_by"_a = std::string(mb::clock_name(defaults.rank_by)),
          "batch_time"_a = defaults.batch_time, "max_batch"_a = defaults.max_batch,
          "min_clock_fraction"_a = defaults.min_clock_fraction, "resets"_a = nb::list(), "rank_only"_a = false,
          "final_round"_a = false, "launch_hint"_a = 0.0, "ramp_idle"_a = defaults.ramp_idle,
          "ramp_time"_a = defaults.ramp_time,
          "Warm-up (`warmup` launches; where the device sat idle `ramp_idle` seconds since its last "
          "measurement, at least `ramp_time` seconds of them), then three clocks (per-launch GPU, batch, CPU "
          "round trip), each until its stop rule holds: "
          "the `rank_by` clock until its relative standard deviation is at most `max_noise` (after `min_samples` "
          "samples spanning `min_time` seconds), the others at `min_samples`; every clock stops at "
          "its share of `max_time` (half for `rank_by`, a quarter each for the others) or at `max_samples`. "
          "`args` is one launch's arguments, or a list of such lists (one per slot); with `resets`, a list of "
          "(target, source) buffer pairs copied before every round, a round launches each slot at most once, "
          "the slots taken in turn across rounds. Returns per-clock statistics (with 'stop', 'discarded' and "
          "'round'), the samples as numpy uint64 arrays in nanoseconds per launch ('gpu_ns', 'batch_ns', "
          "'cpu_ns'), 'batch_size', the final round's slots ('first_slot', 'last_round': that many from there, "
          "wrapping) and the lowest and highest clock seen ('clock', None where unknown). `rank_only` times the "
          "`rank_by` clock alone (the others come back with no samples); `final_round` ends with an untimed round, "
          "after a reset, over slots 0, 1, ... once each (every slot where they fit in half of `max_time`, and at "
          "least two), which 'first_slot' and 'last_round' then name ('final_round': True). `launch_hint`: a "
          "launch's round trip in seconds the caller measured, which sizes the rounds where `warmup` is 0. The "
          "settings' defaults and ranges are MeasureConfig's.")
      .def(
          "clock", [](mb::Device& d) -> nb::typed<nb::object, std::optional<AnyDict>> { return reading(d.clock()); },
          "The GPU's core clock now ({'mhz', 'max_mhz', 'throttled'}), or None where the backend exposes none.");

  m.def(
      "abi", []() -> AnyDict { return abi_dict(); },
      "The kernel ABI as this build compiled it (kernels/include/common.h): {'params': {'size', 'fields': {name: "
      "{'offset', 'format'}}}, 'ops': {name: code}}, each format a code of the struct module.");
  m.def("set_cache_dir", &mb::set_cache_dir, "path"_a,
        "Where backends keep compiled kernels (the package passes paths.cache_dir() / 'kernels'); '' turns "
        "the on-disk cache off.");
  m.def("backends", &mb::backend_names, "Backends compiled into this build, most preferred first.");
  m.def(
      "unavailable_reason", [](const std::string& name) { return mb::backend(name).unavailable_reason(); },
      "backend"_a, "Why `backend` cannot be used on this machine, or '' if it can.");
  m.def(
      "devices",
      [](const std::string& name) -> nb::typed<nb::list, AnyDict> {
        nb::list out;
        for (const auto& i : mb::backend(name).devices()) out.append(info_dict(i));
        return out;
      },
      "backend"_a);
  m.def(
      "open", [](const std::string& name, int index) { return mb::backend(name).open(index); }, "backend"_a,
      "index"_a = 0, "Opens device `index` of `backend`.");
}
