/* A fast structural check of BSON documents for the archive reader's hot path.
 *
 * ms_bson_check_fast() answers "certainly valid" for the documents that make up nearly all of
 * real data (common element types, ASCII keys, moderate nesting) at a fraction of the cost of
 * bson_validate(BSON_VALIDATE_NONE), which validates every key as UTF-8 through a visitor.
 * It is never more lenient than bson_validate: for anything it does not recognise, or any
 * damage, it answers false, and the caller asks bson_validate (which also finds the offset
 * for the error message). tests/unit/test-bson-check.c holds it to that on random and damaged
 * documents. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

bool ms_bson_check_fast(const uint8_t *doc, size_t len);
