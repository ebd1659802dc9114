// The kernel ABI as this build compiled it, for the Python side to check its packing
// against (_core.abi(), tests/test_specs.py): MBParams (kernels/include/common.h, its
// one definition) field by field, and the op codes.
#pragma once

#include <cstddef>
#include <vector>

#include "kernel_abi.h"

namespace mb {

struct ParamsField {
  const char* name;
  size_t offset;
  char format;  // the field's type as a code of Python's struct module ('i': int32, 'f': float32, ...)
};

// Every field of MBParams in memory order; they tile its sizeof(MBParams) bytes.
const std::vector<ParamsField>& params_fields();

struct OpCode {
  const char* name;  // MB_OP_<NAME> in lower case
  int value;
};

const std::vector<OpCode>& op_codes();

// Whether `op` is one of op_codes().
bool known_op(int op);

}  // namespace mb
