#include "checks.h"

#include <cctype>

namespace mb {
namespace {

std::string dims(const std::array<uint32_t, 3>& d) {
  return std::to_string(d[0]) + "x" + std::to_string(d[1]) + "x" + std::to_string(d[2]);
}

bool identifier(const std::string& s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return true;
}

// A C numeric literal without spaces: [-]digits[.digits][e[+-]digits][suffix], or
// [-]0x hex digits. Checked by hand: std::regex, like iostreams' number formatting,
// goes through std::locale, which crashed the extension inside one GPU machine's
// Python (see csrc/cuda/kernel_cache.cpp).
bool number(const std::string& s) {
  size_t i = 0, n = s.size();
  auto digits = [&](int (*is)(int)) {
    size_t start = i;
    while (i < n && is(static_cast<unsigned char>(s[i]))) ++i;
    return i > start;
  };
  if (n == 0 || n > 64) return false;
  if (s[i] == '-') ++i;
  if (i + 1 < n && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'X')) {
    i += 2;
    if (!digits(std::isxdigit)) return false;
  } else {
    if (!digits(std::isdigit)) return false;
    if (i < n && s[i] == '.') {
      ++i;
      digits(std::isdigit);
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
      ++i;
      if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
      if (!digits(std::isdigit)) return false;
    }
  }
  for (int suffix = 0; i < n && suffix < 3; ++suffix, ++i)
    if (std::string("uUlLfF").find(s[i]) == std::string::npos) return false;
  return i == n;
}

}  // namespace

void check_launch(const Device& device, const Launch& launch) {
  if (!launch.kernel) throw UsageError("[core::launch] launch has no kernel");
  // Built only for an error: measure() checks every slot's launch, hundreds of them.
  auto who = [&] { return "[core::launch] " + launch.kernel->label(); };
  for (int d = 0; d < 3; ++d) {
    if (launch.groups[d] == 0 || launch.threads[d] == 0)
      throw UsageError(who() + ": launch of " + dims(launch.groups) + " groups of " + dims(launch.threads) +
                       " threads has an empty dimension");
  }
  uint64_t per_group = uint64_t(launch.threads[0]) * launch.threads[1] * launch.threads[2];
  size_t kernel_max = launch.kernel->max_group_size();
  if (kernel_max > 0 && per_group > kernel_max)
    throw UsageError(who() + ": group of " + std::to_string(per_group) + " threads exceeds this kernel's limit of " +
                     std::to_string(kernel_max));
  int device_max = device.info().max_group_size;
  if (kernel_max > 0 && device_max > 0 && per_group > uint64_t(device_max))
    throw UsageError(who() + ": group of " + std::to_string(per_group) + " threads exceeds the device's limit of " +
                     std::to_string(device_max));
  for (size_t i = 0; i < launch.args.size(); ++i) {
    const auto* buf = std::get_if<std::shared_ptr<Buffer>>(&launch.args[i]);
    if (buf && !*buf) throw UsageError(who() + ": argument " + std::to_string(i) + " is a null buffer");
  }
}

void check_defines(const std::vector<Define>& defines, const std::string& label) {
  for (const Define& d : defines) {
    if (!identifier(d.name))
      throw UsageError("[core::compile] " + label + ": define name '" + d.name + "' is not a C identifier");
    if (!identifier(d.value) && !number(d.value))
      throw UsageError("[core::compile] " + label + ": define " + d.name + " = '" + d.value +
                       "' is neither an identifier nor a number");
  }
}

}  // namespace mb
