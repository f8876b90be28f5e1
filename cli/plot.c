/*
 * plot.c - gnuplot for the CLI's plots (plot.h): one quoting rule and one
 * way of running it, so `fedc sim` and `fedc rounds --plot` draw alike.
 */
#include "cli/plot.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

void cli_gp_quote(const char *s, char *out, size_t len) {
  size_t w = 0;
  for (; *s && w + 3 < len; s++) {
    if ((unsigned char)*s < 0x20) continue;
    if (*s == '\'') out[w++] = '\'';
    out[w++] = *s;
  }
  out[w] = 0;
}

int cli_gnuplot(const char *dir, const char *script, const char **why) {
  pid_t pid = fork();
  if (pid == 0) {
    int nul = open("/dev/null", O_RDWR);
    if (nul >= 0) {
      dup2(nul, 0);
      dup2(nul, 1);
      dup2(nul, 2);
    }
    if (chdir(dir) != 0) _exit(126);
    execlp("gnuplot", "gnuplot", script, (char *)NULL);
    _exit(127);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    *why = pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 127 ? "gnuplot is not installed" : "gnuplot failed";
    return -1;
  }
  return 0;
}
