/* Logging for the worker and tools: leveled lines on stderr (the agent routes them to the journal). */
#pragma once

#include "macro.h"

typedef enum MsLogLevel {
    MS_LOG_ERR = 3,
    MS_LOG_WARNING = 4,
    MS_LOG_NOTICE = 5,
    MS_LOG_INFO = 6,
    MS_LOG_DEBUG = 7,
} MsLogLevel;

void ms_log_set_max_level(MsLogLevel level);
MsLogLevel ms_log_get_max_level(void);
void ms_log(MsLogLevel level, const char *fmt, ...) _printf_(2, 3);

#define log_error(...) ms_log(MS_LOG_ERR, __VA_ARGS__)
#define log_warning(...) ms_log(MS_LOG_WARNING, __VA_ARGS__)
#define log_notice(...) ms_log(MS_LOG_NOTICE, __VA_ARGS__)
#define log_info(...) ms_log(MS_LOG_INFO, __VA_ARGS__)
#define log_debug(...) ms_log(MS_LOG_DEBUG, __VA_ARGS__)
