// The kernel ABI as the host compiles it: kernels/include/common.h, the one definition of
// MBParams, which the kernels include too. Reached by path from here alone, so that every
// native source (and a syntax check that puts only csrc/ on its include path, as
// metal-sdk-check does) reads the same struct without a second include folder.
#pragma once

#include "../../kernels/include/common.h"
