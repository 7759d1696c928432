/* The quick start of R's mirai, in C on libmirai: five daemons, one task that sleeps a second
 * and returns 142, a map of nine one-second squares that completes in about two seconds, then
 * shutdown. The daemons are standalone `mirai-daemon` processes running shell commands.
 * Build and run: bash examples/quickstart.sh */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mirai.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  char why[512];
  mirai_last_error(why, sizeof why);
  fprintf(stderr, "%s: %s\n", what, why);
  exit(1);
}

/* Submits `sh -c SCRIPT` to the exec evaluator, with `opts` (NULL for the defaults). */
static mirai_task *sh(mirai_host *host, const char *script, const mirai_submit_options *opts) {
  char request[256];
  int n = snprintf(request, sizeof request, "{\"argv\": [\"sh\", \"-c\", \"%s\"]}", script);
  mirai_task *task = NULL;
  if (mirai_host_submit(host, (const uint8_t *)request, (size_t)n, opts, &task) != MIRAI_RESULT_OK) die("submit");
  return task;
}

/* Waits for a task and returns the number its command printed. */
static long value(mirai_task *task) {
  mirai_bytes out;
  if (mirai_task_wait(task, -1) != MIRAI_RESULT_OK || mirai_task_take_result(task, &out) != MIRAI_RESULT_OK) die("wait");
  const char *key = "\"stdout\":\"";
  char *text = strndup((const char *)out.data, out.len);
  char *at = strstr(text, key);
  long v = at ? strtol(at + strlen(key), NULL, 10) : -1;
  free(text);
  mirai_bytes_free(&out);
  return v;
}

int main(int argc, char **argv) {
  const char *daemon = argc > 1 ? argv[1] : "mirai-daemon";
  char url[64];
  snprintf(url, sizeof url, "abstract://mirai-quickstart-%d", (int)getpid());

  double t0 = now();
  mirai_host *host = NULL;
  if (mirai_host_listen(url, NULL, &host) != MIRAI_RESULT_OK) die("listen");
  const char *cmd[] = {daemon, "{url}", "--evaluator", "exec"};
  if (mirai_host_launch_local(host, cmd, 4, 5, true) != MIRAI_RESULT_OK) die("launch");
  if (mirai_host_wait_connections(host, 5, 30000) != MIRAI_RESULT_OK) die("connect");
  printf("daemons(5)   5 daemons connected in %.0f ms\n", (now() - t0) * 1e3);

  t0 = now();
  mirai_task *m = sh(host, "sleep 1; echo $((100 + 42))", NULL);
  printf("m            %s\n", mirai_task_is_resolved(m) ? "< mirai [resolved] >" : "< mirai [] >");
  long v = value(m);
  printf("m[]          %ld  (%.2f s)\n", v, now() - t0);
  mirai_task_free(m);

  t0 = now();
  /* One options object for the whole map: a square that hangs times out after 10 s. */
  mirai_submit_options *opts = mirai_submit_options_new();
  if (opts == NULL || mirai_submit_options_set_timeout_ms(opts, 10000) != MIRAI_RESULT_OK) die("options");
  mirai_task *mp[9];
  for (int x = 1; x <= 9; x++) {
    char script[64];
    snprintf(script, sizeof script, "sleep 1; echo $((%d * %d))", x, x);
    mp[x - 1] = sh(host, script, opts);
  }
  mirai_submit_options_free(opts);
  printf("mp[.flat]   ");
  for (int i = 0; i < 9; i++) {
    printf(" %ld", value(mp[i]));
    mirai_task_free(mp[i]);
  }
  printf("  (%.2f s)\n", now() - t0);

  t0 = now();
  mirai_host_free(host);
  printf("daemons(0)   %.2f ms\n", (now() - t0) * 1e3);
  return 0;
}
