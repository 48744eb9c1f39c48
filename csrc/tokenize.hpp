// Protocol-field tokenizer: packets + flows -> one token sequence per flow, and back
// (docs/tokenizer.md). The layout, the encoder and the decoder live in their own headers;
// this one includes them all. No Python here.
#pragma once

#include "tokenize_common.hpp"
#include "tokenize_decode.hpp"
#include "tokenize_encode.hpp"
