/* A lost peer is an error code, never a signal, with SIGPIPE at its default disposition (as in
 * any C program): a host, over a Unix socket and over TLS, survives daemons SIGKILLed while it
 * writes a large task to them, and a C daemon survives hosts SIGKILLed while it writes a large
 * result to them. The program re-executes itself as `sigpipe --host` for the vanishing hosts.
 * Usage: sigpipe PATH/TO/mirai-daemon MEGABYTES ROUNDS TLS_ROUNDS (see run.sh). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

extern char **environ;

/* Time for the transfer to get under way before the peer is killed: 1 GB takes seconds to
 * cross a Unix socket between two processes here. */
#define KILL_AFTER_MS 50

static void sleep_ms(long ms) {
  nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000}, NULL);
}

static uint8_t *filled(size_t len) {
  uint8_t *p = malloc(len);
  CHECK(p != NULL);
  memset(p, 'x', len);
  return p;
}

/* The child's termination signal, or 0 if it exited. */
static int reap(pid_t pid) {
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

/* A mirai-daemon for the host's URL, its secret (and for TLS the CA) in the environment,
 * never on a command line. */
static pid_t spawn_daemon(const char *daemon, mirai_host *host) {
  char secret[128];
  snprintf(secret, sizeof secret, "MIRAI_SECRET=%s", mirai_host_secret_hex(host));
  const char *ca = mirai_host_tls_ca(host);
  char *ca_env = NULL;
  if (ca != NULL) {
    size_t n = strlen("MIRAI_TLS_CA=") + strlen(ca) + 1;
    ca_env = malloc(n);
    CHECK(ca_env != NULL);
    snprintf(ca_env, n, "MIRAI_TLS_CA=%s", ca);
  }
  char *envp[] = {secret, ca_env, NULL};
  char *argv[] = {(char *)daemon, (char *)mirai_host_url(host), NULL};
  pid_t pid;
  CHECK(posix_spawn(&pid, daemon, NULL, NULL, argv, envp) == 0);
  free(ca_env);
  return pid;
}

/* Each round: a 1 GB task is being written to a daemon when the daemon is killed. The task
 * resolves with ConnectionReset (19) and the daemon is no longer counted. */
static void host_survives(const char *daemon, const char *url, const uint8_t *payload, size_t len,
                          int rounds) {
  mirai_host *host = NULL;
  CHECK_OK(mirai_host_listen(url, NULL, &host));
  for (int round = 0; round < rounds; round++) {
    pid_t pid = spawn_daemon(daemon, host);
    CHECK_OK(mirai_host_wait_connections(host, 1, 30000));
    mirai_task *task = NULL;
    CHECK_OK(mirai_host_submit(host, payload, len, NULL, &task));
    mirai_counters c;
    CHECK_OK(mirai_host_counters(host, &c));
    while (c.executing == 0) {
      sleep_ms(1);
      CHECK_OK(mirai_host_counters(host, &c));
    }
    sleep_ms(KILL_AFTER_MS);
    CHECK(kill(pid, SIGKILL) == 0);
    CHECK(reap(pid) == SIGKILL);
    int32_t code = 0;
    CHECK(finish(task, NULL, &code) == MIRAI_STATUS_FAILED && code == 19);
    mirai_task_free(task);
    for (int i = 0; i < 5000; i++) {
      CHECK_OK(mirai_host_counters(host, &c));
      if (c.connections == 0) break;
      sleep_ms(1);
    }
    CHECK(c.connections == 0);
  }
  mirai_host_free(host);
  printf("sigpipe: host at %.*s survived %d daemons killed mid-task (%zu MB)\n",
         (int)strcspn(url, ":"), url, rounds, len >> 20);
}

/* The vanishing host: tells its parent the URL and secret on stdout, submits one task and
 * waits for its result; exit status 3 means the result arrived in full (killed too late). */
static int host_main(void) {
  mirai_host *host = NULL;
  char url[64];
  snprintf(url, sizeof url, "abstract://mirai-sigpipe-host-%d", (int)getpid());
  CHECK_OK(mirai_host_listen(url, NULL, &host));
  printf("%s\n%s\n", mirai_host_url(host), mirai_host_secret_hex(host));
  CHECK(fflush(stdout) == 0);
  mirai_task *task = submit_text(host, "a large result, please", NULL);
  finish(task, NULL, NULL);
  return 3;
}

typedef struct {
  pid_t host;
  size_t len;
  uint8_t *result;
  pthread_t killer;
  int evaluated;
} daemon_state;

static void *kill_host_later(void *arg) {
  daemon_state *s = arg;
  sleep_ms(KILL_AFTER_MS);
  CHECK(kill(s->host, SIGKILL) == 0);
  return NULL;
}

/* Answers the host's one task with `len` bytes and has the host killed while they go out. */
static mirai_eval_status big_result(void *userdata, const uint8_t *data, size_t len,
                                    bool everywhere, const mirai_interrupt *intr,
                                    mirai_output *out) {
  (void)data;
  (void)len;
  (void)everywhere;
  (void)intr;
  daemon_state *s = userdata;
  CHECK_OK(mirai_output_set(out, s->result, s->len));
  CHECK(pthread_create(&s->killer, NULL, kill_host_later, s) == 0);
  s->evaluated = 1;
  return MIRAI_EVAL_STATUS_VALUE;
}

/* Each round: a C daemon (on this thread) is writing a 1 GB result when its host is killed.
 * The daemon returns from mirai_daemon_run with the connection ended; this process lives on. */
static void daemon_survives(const char *self, size_t len, int rounds) {
  daemon_state s = {.len = len, .result = filled(len)};
  for (int round = 0; round < rounds; round++) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    posix_spawn_file_actions_t actions;
    CHECK(posix_spawn_file_actions_init(&actions) == 0);
    CHECK(posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO) == 0);
    CHECK(posix_spawn_file_actions_addclose(&actions, fds[0]) == 0);
    char *argv[] = {(char *)self, "--host", NULL};
    CHECK(posix_spawn(&s.host, self, &actions, NULL, argv, environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    FILE *from_host = fdopen(fds[0], "r");
    CHECK(from_host != NULL);
    char url[128], secret[128];
    CHECK(fgets(url, sizeof url, from_host) != NULL && fgets(secret, sizeof secret, from_host) != NULL);
    fclose(from_host);
    url[strcspn(url, "\n")] = '\0';
    secret[strcspn(secret, "\n")] = '\0';

    mirai_daemon_options *opts = mirai_daemon_options_new();
    CHECK(opts != NULL);
    CHECK_OK(mirai_daemon_options_set_secret_hex(opts, secret));
    mirai_evaluator ev = {.userdata = &s, .evaluate = big_result};
    s.evaluated = 0;
    int32_t exit_code = -1;
    mirai_result r = mirai_daemon_run(url, opts, &ev, &exit_code);
    mirai_daemon_options_free(opts);
    CHECK(s.evaluated);
    CHECK(pthread_join(s.killer, NULL) == 0);
    CHECK(reap(s.host) == SIGKILL);
    /* A lost host ends the connection: exit code 0. */
    CHECK(r == MIRAI_RESULT_OK && exit_code == 0);
  }
  free(s.result);
  printf("sigpipe: C daemon survived %d hosts killed mid-result (%zu MB)\n", rounds, len >> 20);
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--host") == 0) {
    return host_main();
  }
  CHECK(argc == 5);
  /* The disposition a C program starts with; a harness that ignores or blocks SIGPIPE would
   * otherwise make this test pass without testing anything. */
  CHECK(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  CHECK(pthread_sigmask(SIG_UNBLOCK, &pipe_only, NULL) == 0);
  struct sigaction now;
  CHECK(sigaction(SIGPIPE, NULL, &now) == 0 && now.sa_handler == SIG_DFL);

  size_t len = (size_t)strtoull(argv[2], NULL, 10) << 20;
  int rounds = atoi(argv[3]);
  int tls_rounds = atoi(argv[4]);
  CHECK(len > 0 && rounds > 0 && tls_rounds >= 0);
  uint8_t *payload = filled(len);
  char url[64];
  snprintf(url, sizeof url, "abstract://mirai-sigpipe-%d", (int)getpid());
  host_survives(argv[1], url, payload, len, rounds);
  /* rustls writes its records through a path of its own. */
  if (tls_rounds > 0) host_survives(argv[1], "tls+tcp://127.0.0.1:0", payload, len, tls_rounds);
  free(payload);
  daemon_survives(argv[0], len, rounds);
  return 0;
}
