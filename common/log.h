/*
 * log.h - one line per event on stderr: "<iso-time> <level> <module>: <text>".
 *
 * The level comes from fc_log_set_level() or FEDC_LOG=debug|info|warn|error.
 * Thread-safe (each line is one write(2)). Warnings and errors are rate-limited
 * per call site (10 lines/s, bursts of 50; log.c), with a count of what was
 * suppressed on the next line printed. The client library logs only when
 * the embedding program sets a level or a sink; the coordinator logs at info.
 * A message is one line whatever it quotes: the text path escapes control
 * characters, ESC and invalid UTF-8 (fc_text_escape), the JSON path escapes
 * them as JSON.
 */
#ifndef FEDC_COMMON_LOG_H
#define FEDC_COMMON_LOG_H

#include <stddef.h>

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

/*
 * s (n bytes, or up to its NUL if n is (size_t)-1) rendered safe for a
 * terminal or a one-line text log, into out[cap] (always NUL-terminated;
 * cut at a whole escape if it does not fit). Printable ASCII and valid UTF-8
 * pass; everything a terminal or a line-oriented reader could act on is
 * written as text: \n \r \t, other C0 controls, DEL and every byte of
 * invalid UTF-8 as \xNN, the C1 controls, U+2028/U+2029 and the bidi
 * controls (U+200E/F, U+202A-E, U+2066-9) as \uNNNN, and a backslash as \\
 * (so an escaped ESC and the four characters "\x1b" stay distinguishable).
 * The text log path (fc_log) passes every message through it: a format
 * string cannot say which %s a peer controls. Returns out.
 */
char *fc_text_escape(char *out, size_t cap, const char *s, size_t n);

#define FC_DEBUG(mod, ...) fc_log(FC_LOG_DEBUG, mod, __VA_ARGS__)
#define FC_INFO(mod, ...) fc_log(FC_LOG_INFO, mod, __VA_ARGS__)
#define FC_WARN(mod, ...) fc_log(FC_LOG_WARN, mod, __VA_ARGS__)
#define FC_ERROR(mod, ...) fc_log(FC_LOG_ERROR, mod, __VA_ARGS__)

#endif
