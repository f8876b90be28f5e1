/*
 * log.h - one line per event on stderr: "<iso-time> <level> <module>: <text>".
 *
 * The level comes from fc_log_set_level() or FEDC_LOG=debug|info|warn|error.
 * Thread-safe (each line is one write(2)). Warnings and errors are rate-limited
 * per call site (10 lines/s, bursts of 50; log.c), with a count of what was
 * suppressed on the next line printed. The client library logs only when
 * the embedding program sets a level or a sink; the coordinator logs at info.
 */
#ifndef FEDC_COMMON_LOG_H
#define FEDC_COMMON_LOG_H

enum fc_log_level { FC_LOG_DEBUG = 0, FC_LOG_INFO = 1, FC_LOG_WARN = 2, FC_LOG_ERROR = 3, FC_LOG_OFF = 4 };

typedef void (*fc_log_sink)(int level, const char *line, void *ctx);

void fc_log_set_level(int level);
int fc_log_get_level(void);
/* Parse "debug|info|warn|error|off"; returns -1 if unknown. */
int fc_log_parse_level(const char *s);
/* Lines as JSON objects on stderr: {"ts","level","module","msg"[,"suppressed"]}. */
void fc_log_set_json(int on);
/* Route lines to a sink instead of stderr (NULL restores stderr). */
void fc_log_set_sink(fc_log_sink sink, void *ctx);
void fc_log(int level, const char *module, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define FC_DEBUG(mod, ...) fc_log(FC_LOG_DEBUG, mod, __VA_ARGS__)
#define FC_INFO(mod, ...) fc_log(FC_LOG_INFO, mod, __VA_ARGS__)
#define FC_WARN(mod, ...) fc_log(FC_LOG_WARN, mod, __VA_ARGS__)
#define FC_ERROR(mod, ...) fc_log(FC_LOG_ERROR, mod, __VA_ARGS__)

#endif
