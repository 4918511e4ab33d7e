/* Hexadecimal digits: lower-case encoding of bytes, and the value of one digit. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Write 2 * len lower-case hex digits and a NUL to out (2 * len + 1 bytes). */
void ms_hex_encode(const uint8_t *in, size_t len, char *out);
/* 0..15 for '0'-'9', 'a'-'f', 'A'-'F'; -1 for anything else. */
int ms_hex_digit_value(char c);
