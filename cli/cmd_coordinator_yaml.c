/*
 * cmd_coordinator_yaml.c - `fedc coordinator --config FILE`: a flat YAML
 * mapping of option names to scalars, read with libyaml. Each key is looked
 * up in cc_options and stored by cc_apply with FILE:LINE as its origin; a key
 * given twice, an unknown key (with the nearest option suggested), a second
 * document, nesting, lists and aliases are refused, one line each.
 *
 * May call: cmd_coordinator_opts.c (cc_find_opt, cc_apply, cc_shown,
 * cc_options) and cli_common; called by cmd_coordinator.c only.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <yaml.h>

#include "cli/cli_common.h"
#include "cli/cmd_coordinator_int.h"

/* Flat YAML mapping of scalars, parsed with libyaml; `seen` records the line
 * of every key so a second occurrence is refused. */
int cc_load_config(settings *s, const char *path, origin *seen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "fedc coordinator: cannot open config %s: %s\n", path, strerror(errno));
    return 2;
  }
  yaml_parser_t p;
  yaml_parser_initialize(&p);
  yaml_parser_set_input_file(&p, f);
  int rc = 0, depth = 0, done = 0, documents = 0, have_key = 0;
  char key[128] = "", kbuf[96];
  size_t key_line = 0;
  while (!done && !rc) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&p, &ev)) {
      fprintf(stderr, "fedc coordinator: %s:%zu: %s\n", path, p.problem_mark.line + 1,
              p.problem ? p.problem : "YAML error");
      rc = 2;
      break;
    }
    size_t line = ev.start_mark.line + 1;
    switch (ev.type) {
    case YAML_DOCUMENT_START_EVENT:
      /* A second document's keys were applied over the first's. */
      if (++documents > 1) {
        fprintf(stderr, "fedc coordinator: %s:%zu: a second YAML document: the file must be one mapping of options\n",
                path, line);
        rc = 2;
      }
      break;
    case YAML_MAPPING_START_EVENT:
      if (++depth > 1) {
        fprintf(stderr, "fedc coordinator: %s:%zu: nested mappings are not options ('%s')\n", path, line,
                cc_shown(key, kbuf, sizeof kbuf));
        rc = 2;
      }
      break;
    case YAML_SEQUENCE_START_EVENT:
      fprintf(stderr, "fedc coordinator: %s:%zu: lists are not options ('%s')\n", path, line,
              cc_shown(key, kbuf, sizeof kbuf));
      rc = 2;
      break;
    case YAML_MAPPING_END_EVENT: depth--; break;
    case YAML_ALIAS_EVENT:
      /* Skipping it would shift every later key onto the previous value. */
      fprintf(stderr, "fedc coordinator: %s:%zu: aliases are not supported ('%s')\n", path, line,
              cc_shown(key, kbuf, sizeof kbuf));
      rc = 2;
      break;
    case YAML_SCALAR_EVENT: {
      const char *v = (const char *)ev.data.scalar.value;
      if (depth == 0) {
        /* e.g. "rounds 3" without the colon: one plain scalar, no option set. */
        fprintf(stderr, "fedc coordinator: %s:%zu: not a mapping of options ('%s')\n", path, line,
                cc_shown(v, kbuf, 44));
        rc = 2;
      } else if (!have_key) {
        snprintf(key, sizeof key, "%s", v);
        key_line = line;
        have_key = 1;
      } else {
        int i = cc_find_opt(key);
        have_key = 0;
        if (i < 0) {
          struct option names[CC_NOPTS + 1];
          memset(names, 0, sizeof names);
          for (size_t k = 0; k < CC_NOPTS; k++) names[k].name = cc_options[k].name;
          const char *near = cli_nearest_option(key, strlen(key), names);
          fprintf(stderr, "fedc coordinator: %s:%zu: unknown option '%s'%s%s%s (see fedc coordinator --help)\n", path,
                  key_line, cc_shown(key, kbuf, sizeof kbuf), near ? " (did you mean '" : "", near ? near : "",
                  near ? "'?)" : "");
          rc = 2;
        } else if (seen[i].file == path) {
          /* Even with the same value: one of the two lines is a mistake. */
          fprintf(stderr, "fedc coordinator: %s:%zu: '%s' given twice (first at line %zu)\n", path, key_line, key,
                  seen[i].line);
          rc = 2;
        } else {
          seen[i] = (origin){path, key_line};
          rc = cc_apply(s, i, v, (origin){path, line});
        }
      }
      break;
    }
    case YAML_STREAM_END_EVENT: done = 1; break;
    default: break;
    }
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&p);
  fclose(f);
  return rc;
}
