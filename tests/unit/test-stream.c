#include "test.h"
static void placeholder(void) {}
MS_TEST_MAIN(TEST_CASE(placeholder))
