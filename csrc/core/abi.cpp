#include "abi.h"

#include <cstdint>
#include <type_traits>

namespace mb {
namespace {

template <typename T>
struct always_false : std::false_type {};

// The struct-module code of a field's type, so that Python can compare types, not
// only offsets: a field changed from int to float keeps its offset but not its code.
template <typename T>
constexpr char format_of() {
  if constexpr (std::is_same_v<T, float>) {
    return 'f';
  } else if constexpr (std::is_same_v<T, double>) {
    return 'd';
  } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    constexpr bool s = std::is_signed_v<T>;
    switch (sizeof(T)) {
      case 1: return s ? 'b' : 'B';
      case 2: return s ? 'h' : 'H';
      case 4: return s ? 'i' : 'I';
      default: return s ? 'q' : 'Q';
    }
  } else {
    static_assert(always_false<T>::value, "an MBParams field must be an integer or a float");
    return '?';
  }
}

#define MB_ABI_FIELD(type, name) {#name, offsetof(MBParams, name), format_of<decltype(MBParams::name)>()},
#define MB_ABI_SIZE(type, name) +sizeof(MBParams::name)

// Fields that do not add up to the struct are padding, which some backend may lay out
// differently from the host.
static_assert(0 MB_PARAMS_FIELDS(MB_ABI_SIZE) == sizeof(MBParams),
              "MBParams has padding (kernels/include/common.h): order or pad its fields so it has none");

}  // namespace

const std::vector<ParamsField>& params_fields() {
  static const std::vector<ParamsField> fields{MB_PARAMS_FIELDS(MB_ABI_FIELD)};
  return fields;
}

const std::vector<OpCode>& op_codes() {
  static const std::vector<OpCode> ops{
      {"matmul", MB_OP_MATMUL}, {"bias_add", MB_OP_BIAS_ADD}, {"alpha_beta", MB_OP_ALPHA_BETA}};
  return ops;
}

bool known_op(int op) {
  for (const OpCode& o : op_codes())
    if (o.value == op) return true;
  return false;
}

}  // namespace mb
