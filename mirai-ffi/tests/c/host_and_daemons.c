/* A host with standalone mirai-daemon processes: echo and exec evaluators, a plugin evaluator,
 * callbacks, the completion fd, everywhere, cancellation, timeouts, option refusals, and error
 * paths.
 * Usage: host_and_daemons PATH/TO/mirai-daemon PATH/TO/plugin.so PATH/TO/fake-sbatch */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static atomic_int callbacks;

static void on_done(void *userdata, uint64_t id, mirai_status status,
                    int32_t code) {
  (void)id;
  (void)code;
  CHECK(userdata == &callbacks);
  CHECK(status == MIRAI_STATUS_VALUE);
  atomic_fetch_add(&callbacks, 1);
}

static mirai_host *start(const char *daemon, const char *evaluator,
                         const char *plugin, size_t n) {
  mirai_host *host = NULL;
  char url[64];
  snprintf(url, sizeof url, "abstract://mirai-c-test-%d-%s", (int)getpid(),
           evaluator);
  CHECK_OK(mirai_host_listen(url, NULL, &host));
  const char *argv[] = {daemon, "{url}", "--evaluator", evaluator, "--plugin",
                        plugin};
  size_t argc = plugin ? 6 : 4;
  CHECK_OK(mirai_host_launch_local(host, argv, argc, n, true));
  CHECK_OK(mirai_host_wait_connections(host, n, 30000));
  return host;
}

static void echo_daemons(const char *daemon) {
  mirai_host *host = start(daemon, "echo", NULL, 3);
  mirai_counters c;
  CHECK_OK(mirai_host_counters(host, &c));
  CHECK(c.connections == 3 && c.cumulative == 3);

  /* 200 tasks with a callback each, and completions through the fd. */
  enum { N = 200 };
  mirai_task *tasks[N];
  /* One options object serves every submission. */
  mirai_submit_options *opts = mirai_submit_options_new();
  CHECK(opts != NULL);
  CHECK_OK(mirai_submit_options_set_callback(opts, on_done, &callbacks));
  CHECK_OK(mirai_submit_options_set_notify(opts, true));
  for (int i = 0; i < N; i++) {
    char text[32];
    snprintf(text, sizeof text, "task %d", i);
    tasks[i] = submit_text(host, text, opts);
    CHECK(mirai_task_id(tasks[i]) == (uint64_t)i + 1);
  }
  mirai_submit_options_free(opts);
  size_t seen = 0;
  int fd = mirai_host_completion_fd(host);
  CHECK(fd >= 0);
  while (seen < N) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    CHECK(poll(&p, 1, 30000) == 1);
    uint64_t ids[64];
    size_t n = 0;
    CHECK_OK(mirai_host_take_completions(host, ids, 64, &n));
    seen += n;
  }
  CHECK(seen == N);
  /* Nothing left: with no room (ids NULL, cap 0) the answer is simply none. */
  size_t none = 99;
  CHECK_OK(mirai_host_take_completions(host, NULL, 0, &none));
  CHECK(none == 0);
  CHECK(mirai_host_take_completions(host, NULL, 1, &none) == MIRAI_RESULT_NULL_PARAMETER);
  /* Racing resolved tasks: the first in array order wins at once. Bad races are refused
   * before any wait. */
  size_t winner = 99;
  CHECK_OK(mirai_host_race(host, (const mirai_task *const *)tasks, N, -1, &winner));
  CHECK(winner == 0);
  CHECK(mirai_host_race(host, (const mirai_task *const *)tasks, 0, -1, &winner) == MIRAI_RESULT_INVALID_ARGUMENT);
  CHECK(mirai_host_race(host, (const mirai_task *const *)tasks, N, -1, NULL) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_race(host, NULL, 1, -1, &winner) == MIRAI_RESULT_NULL_PARAMETER);
  /* A second handle to a task sees the same task; NULL clones to NULL. */
  mirai_task *twin = mirai_task_clone(tasks[1]);
  CHECK(twin != NULL && mirai_task_id(twin) == mirai_task_id(tasks[1]) && mirai_task_is_resolved(twin));
  mirai_task_free(twin);
  CHECK(mirai_task_clone(NULL) == NULL);
  /* Memory counters: nothing queued now; a NULL out-parameter is refused. */
  mirai_memory mem;
  CHECK_OK(mirai_host_memory(host, &mem));
  CHECK(mem.used == 0 && mem.limit == 0);
  CHECK(mirai_host_memory(host, NULL) == MIRAI_RESULT_NULL_PARAMETER);
  /* try_submit without a cap behaves as submit. */
  mirai_task *tried = NULL;
  CHECK_OK(mirai_host_try_submit(host, (const uint8_t *)"tried", 5, NULL, &tried));
  mirai_bytes tried_out;
  CHECK(finish(tried, &tried_out, NULL) == MIRAI_STATUS_VALUE && bytes_are(&tried_out, "tried"));
  mirai_bytes_free(&tried_out);
  mirai_task_free(tried);
  /* A callback set after resolution runs at once; a NULL one is refused. */
  CHECK_OK(mirai_task_set_callback(tasks[0], on_done, &callbacks));
  CHECK(mirai_task_set_callback(tasks[0], NULL, NULL) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_task_set_callback(NULL, on_done, &callbacks) == MIRAI_RESULT_NULL_PARAMETER);
  for (int i = 0; i < N; i++) {
    char text[32];
    snprintf(text, sizeof text, "task %d", i);
    mirai_bytes out;
    CHECK(finish(tasks[i], &out, NULL) == MIRAI_STATUS_VALUE);
    CHECK(bytes_are(&out, text));
    mirai_bytes_free(&out);
    CHECK(out.data == NULL && out.len == 0);
    /* The result is moved out, not copied: a second take is refused. */
    CHECK(mirai_task_take_result(tasks[i], &out) == MIRAI_RESULT_INCORRECT_STATE);
    mirai_task_free(tasks[i]);
  }
  /* Callbacks run on the host's I/O thread after resolution; closing joins it. */
  CHECK_OK(mirai_host_close(host));
  CHECK(atomic_load(&callbacks) == N + 1);

  /* Use after close: a clear code, no crash. Task handles outlive the host's closing. */
  mirai_task *late = NULL;
  CHECK(mirai_host_submit(host, (const uint8_t *)"x", 1, NULL, &late) ==
        MIRAI_RESULT_OBJECT_CLOSED);
  CHECK(late == NULL);
  /* A buffer is consumed even when its submission fails (valgrind sees no leak). */
  mirai_buffer *buf = mirai_buffer_new(0);
  CHECK_OK(mirai_buffer_write(buf, (const uint8_t *)"x", 1));
  CHECK(mirai_host_submit_buffer(host, buf, NULL, &late) == MIRAI_RESULT_OBJECT_CLOSED);
  CHECK(late == NULL);
  CHECK_OK(mirai_host_close(host));
  mirai_host_free(host);
}

static void exec_daemons(const char *daemon) {
  mirai_host *host = start(daemon, "exec", NULL, 2);
  mirai_bytes out;

  mirai_task *hello = submit_text(host, "{\"argv\": [\"echo\", \"hello\"]}", NULL);
  CHECK(finish(hello, &out, NULL) == MIRAI_STATUS_VALUE);
  CHECK(strstr((const char *)out.data, "\"stdout\":\"hello\\n\"") != NULL);
  mirai_bytes_free(&out);
  mirai_task_free(hello);

  /* everywhere: one copy per daemon, on distinct daemons (distinct pids). */
  mirai_task **copies = NULL;
  size_t n = 0;
  const char *pid = "{\"argv\": [\"sh\", \"-c\", \"echo $PPID\"]}";
  CHECK_OK(mirai_host_everywhere(host, (const uint8_t *)pid, strlen(pid), 1,
                                 &copies, &n));
  CHECK(n == 2);
  mirai_bytes a, b;
  CHECK(finish(copies[0], &a, NULL) == MIRAI_STATUS_VALUE);
  CHECK(finish(copies[1], &b, NULL) == MIRAI_STATUS_VALUE);
  CHECK(a.len != b.len || memcmp(a.data, b.data, a.len) != 0);
  mirai_bytes_free(&a);
  mirai_bytes_free(&b);
  mirai_task_array_free(copies, n);

  /* Cancel a running command: resolves 20 at once, the daemon stays. */
  mirai_task *sleeper = submit_text(host, "{\"argv\": [\"sleep\", \"60\"]}", NULL);
  mirai_counters c;
  do {
    CHECK_OK(mirai_host_counters(host, &c));
  } while (c.executing == 0);
  CHECK(mirai_task_cancel(sleeper));
  CHECK(!mirai_task_cancel(sleeper));
  int32_t code = 0;
  CHECK(finish(sleeper, NULL, &code) == MIRAI_STATUS_FAILED && code == 20);
  mirai_task_free(sleeper);

  /* A timeout resolves 5. */
  mirai_submit_options *opts = mirai_submit_options_new();
  CHECK_OK(mirai_submit_options_set_timeout_ms(opts, 200));
  mirai_task *slow = submit_text(host, "{\"argv\": [\"sleep\", \"60\"]}", opts);
  mirai_submit_options_free(opts);
  CHECK(finish(slow, NULL, &code) == MIRAI_STATUS_FAILED && code == 5);
  mirai_task_free(slow);

  /* A malformed request is an evaluation error, with the message as its bytes. */
  mirai_task *bad = submit_text(host, "{\"args\": 1}", NULL);
  CHECK(finish(bad, &out, NULL) == MIRAI_STATUS_ERROR);
  CHECK(strstr((const char *)out.data, "invalid exec request") != NULL);
  mirai_bytes_free(&out);
  mirai_task_free(bad);

  CHECK_OK(mirai_host_counters(host, &c));
  CHECK(c.connections == 2);
  mirai_host_free(host);
}

static void plugin_daemons(const char *daemon, const char *plugin) {
  mirai_host *host = start(daemon, "plugin", plugin, 2);
  for (int x = 1; x <= 9; x++) {
    char text[8], want[8];
    snprintf(text, sizeof text, "%d", x);
    snprintf(want, sizeof want, "%d", x * x);
    mirai_task *t = submit_text(host, text, NULL);
    mirai_bytes out;
    CHECK(finish(t, &out, NULL) == MIRAI_STATUS_VALUE);
    CHECK(bytes_are(&out, want));
    mirai_bytes_free(&out);
    mirai_task_free(t);
  }
  mirai_task *t = submit_text(host, "not a number", NULL);
  CHECK(finish(t, NULL, NULL) == MIRAI_STATUS_ERROR);
  mirai_task_free(t);
  mirai_host_free(host);
}

/* A stand-in for an HTTP launch API: answers each request, once read whole, with the next of
 * `replies` ("STATUS BODY"). */
struct api {
  int fd;
  int port;
  size_t n;
  const char *const *replies;
};

static void *api_serve(void *arg) {
  struct api *api = arg;
  for (size_t i = 0; i < api->n; i++) {
    int c = accept(api->fd, NULL, NULL);
    CHECK(c >= 0);
    char req[8192];
    size_t got = 0;
    for (;;) {
      ssize_t k = recv(c, req + got, sizeof req - 1 - got, 0);
      CHECK(k > 0);
      got += (size_t)k;
      req[got] = 0;
      const char *end = strstr(req, "\r\n\r\n");
      const char *len = strstr(req, "Content-Length: ");
      if (end != NULL && len != NULL &&
          got >= (size_t)(end + 4 - req) + strtoul(len + 16, NULL, 10)) {
        break;
      }
    }
    const char *body = strchr(api->replies[i], ' ') + 1;
    char resp[256];
    int m = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %.3s X\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     api->replies[i], strlen(body), body);
    CHECK(send(c, resp, (size_t)m, 0) == m);
    close(c);
  }
  return NULL;
}

static void api_start(struct api *api, pthread_t *thread) {
  api->fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(api->fd >= 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  CHECK(bind(api->fd, (struct sockaddr *)&addr, len) == 0 && listen(api->fd, 8) == 0);
  CHECK(getsockname(api->fd, (struct sockaddr *)&addr, &len) == 0);
  api->port = ntohs(addr.sin_port);
  CHECK(pthread_create(thread, NULL, api_serve, api) == 0);
}

/* The HTTP launcher hands back each response body (the API's job ids, say); a failed launch
 * leaves the responses untouched and nothing allocated. */
static void http_launch(mirai_host *host, const char *const *argv) {
  const char *replies[] = {"200 {\"job\": 1}", "200 {\"job\": 2}", "200 {\"job\": 3}",
                           "503 no capacity", "200 {\"job\": 5}", "404 gone"};
  struct api api = {.n = 6, .replies = replies};
  pthread_t server;
  api_start(&api, &server);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/launch", api.port);
  const char *headers[] = {"Content-Type: application/json"};
  const char *body = "{\"cmd\": \"%s\", \"environment\": %e}";

  mirai_bytes responses[2];
  CHECK_OK(mirai_host_launch_http(host, url, "POST", headers, 1, body, NULL, "t0ken", argv, 2, 2,
                                  responses));
  CHECK(bytes_are(&responses[0], "{\"job\": 1}") && bytes_are(&responses[1], "{\"job\": 2}"));
  mirai_bytes_free(&responses[0]);
  mirai_bytes_free(&responses[1]);

  mirai_bytes untouched[2] = {{NULL, 0}, {NULL, 0}};
  CHECK(mirai_host_launch_http(host, url, "POST", headers, 1, body, NULL, NULL, argv, 2, 2,
                               untouched) == MIRAI_RESULT_CONNECTION_REFUSED);
  char why[512];
  mirai_last_error(why, sizeof why);
  CHECK(strstr(why, "503") != NULL && strstr(why, "no capacity") != NULL);
  CHECK(untouched[0].data == NULL && untouched[1].data == NULL);

  /* Without a responses array the bodies are dropped. */
  CHECK_OK(mirai_host_launch_http(host, url, "POST", headers, 1, body, NULL, NULL, argv, 2, 1, NULL));

  /* A plain request: any answer is success, with its status and body. */
  uint16_t status = 0;
  mirai_bytes response = {NULL, 0};
  CHECK(mirai_http_request(url, "GET", headers, 1, "", NULL, &response) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK_OK(mirai_http_request(url, "GET", headers, 1, "", &status, &response));
  CHECK(status == 404 && bytes_are(&response, "gone"));
  mirai_bytes_free(&response);
  CHECK(pthread_join(server, NULL) == 0);
  close(api.fd);
  /* Plain http:// goes only to loopback; the request is refused before any connection. */
  CHECK(mirai_http_request("http://192.0.2.1:1/x", "GET", NULL, 0, "", &status, &response) ==
        MIRAI_RESULT_NOT_SUPPORTED);
  CHECK(mirai_http_request(NULL, "GET", NULL, 0, "", &status, &response) == MIRAI_RESULT_NULL_PARAMETER);
  /* Nobody listening: a failure, and nothing written. */
  status = 0;
  CHECK(mirai_http_request(url, "GET", headers, 1, "", &status, &response) == MIRAI_RESULT_CONNECTION_REFUSED);
  CHECK(status == 0 && response.data == NULL);
}

/* Launchers through the C ABI: a generic remote command, a failing one, and a Slurm-style
 * job through a stand-in sbatch (argv[3]) whose job is cancelled with `kill`, and an HTTP API. */
static void launchers(const char *daemon, const char *fake_sbatch) {
  mirai_host *host = NULL;
  char url[64];
  snprintf(url, sizeof url, "abstract://mirai-c-launch-%d", (int)getpid());
  CHECK_OK(mirai_host_listen(url, NULL, &host));
  const char *argv[] = {daemon, "{url}"};

  const char *via_sh[] = {"-c", "."};
  CHECK_OK(mirai_host_launch_remote(host, "sh", via_sh, 2, false, argv, 2, 2));
  CHECK_OK(mirai_host_wait_launched(host, 2, 30000));
  /* Negative timeouts mean "no limit" and must not overflow anything. */
  CHECK_OK(mirai_host_wait_launched(host, 2, -1));
  CHECK_OK(mirai_host_wait_capacity(host, -1));
  CHECK_OK(mirai_host_wait_connections(host, 2, -1));

  const char *failing[] = {"-c", "echo nope >&2; exit 3", "."};
  CHECK_OK(mirai_host_launch_remote(host, "sh", failing, 3, false, argv, 2, 1));
  CHECK(mirai_host_wait_launched(host, 3, 30000) == MIRAI_RESULT_CONNECTION_REFUSED);
  char why[512];
  mirai_last_error(why, sizeof why);
  CHECK(strstr(why, "nope") != NULL);
  /* Only the latest launch is watched (earlier ones are not kept): after a good launch the
   * failed one no longer counts. */
  CHECK_OK(mirai_host_launch_remote(host, "sh", via_sh, 2, false, argv, 2, 1));
  CHECK_OK(mirai_host_wait_launched(host, 3, 30000));

  mirai_jobs *jobs = NULL;
  const char *options[] = {"--partition=debug"};
  CHECK_OK(mirai_host_launch_cluster(host, MIRAI_SCHEDULER_SLURM, options, 1, fake_sbatch,
                                     "kill", argv, 2, 1, &jobs));
  CHECK_OK(mirai_host_wait_connections(host, 4, 30000));
  mirai_task *t = submit_text(host, "through a job", NULL);
  mirai_bytes out;
  CHECK(finish(t, &out, NULL) == MIRAI_STATUS_VALUE && bytes_are(&out, "through a job"));
  mirai_bytes_free(&out);
  mirai_task_free(t);
  CHECK_OK(mirai_jobs_cancel(jobs));
  CHECK_OK(mirai_jobs_cancel(jobs)); /* idempotent */
  mirai_jobs_free(jobs);

  /* Freed in the background: the call returns at once, and the job is still cancelled (its
   * daemon is killed, so the host sees it leave). */
  mirai_counters c;
  do {
    CHECK_OK(mirai_host_counters(host, &c));
  } while (c.connections > 3);
  CHECK_OK(mirai_host_launch_cluster(host, MIRAI_SCHEDULER_SLURM, options, 1, fake_sbatch,
                                     "kill", argv, 2, 1, &jobs));
  CHECK_OK(mirai_host_wait_connections(host, 4, 30000));
  mirai_jobs_free_background(jobs);
  mirai_jobs_free_background(NULL);
  for (int i = 0; i < 3000; i++) {
    CHECK_OK(mirai_host_counters(host, &c));
    if (c.connections == 3) break;
    nanosleep(&(struct timespec){0, 10000000}, NULL);
  }
  CHECK(c.connections == 3);

  http_launch(host, argv);

  CHECK(mirai_host_launch_ssh(NULL, NULL, 0, false, 0, 10, NULL, 0, argv, 2) ==
        MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_launch_remote(host, "sh", via_sh, 2, false, NULL, 0, 1) ==
        MIRAI_RESULT_NULL_PARAMETER);
  mirai_jobs_free(NULL);
  mirai_host_free(host);
}

static mirai_eval_status never_called(void *userdata, const uint8_t *data, size_t len, bool everywhere,
                                      const mirai_interrupt *intr, mirai_output *out) {
  (void)userdata, (void)data, (void)len, (void)everywhere, (void)intr, (void)out;
  CHECK(!"called");
  return MIRAI_EVAL_STATUS_ERROR;
}

static void error_paths(void) {
  mirai_host *host = (mirai_host *)0x1;
  CHECK(mirai_host_listen("tcp://nowhere", NULL, &host) ==
        MIRAI_RESULT_ADDRESS_INVALID);
  CHECK(host == (mirai_host *)0x1); /* out-parameters untouched on failure */
  char why[256];
  size_t len = mirai_last_error(why, sizeof why);
  CHECK(len > 0 && strstr(why, "tcp://nowhere") != NULL);
  CHECK(mirai_last_error(NULL, 0) == len);
  char tiny[4];
  mirai_last_error(tiny, sizeof tiny);
  CHECK(strlen(tiny) == 3);

  CHECK(mirai_host_listen(NULL, NULL, &host) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_listen("tcp://127.0.0.1:0", NULL, NULL) ==
        MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_submit(NULL, (const uint8_t *)"x", 1, NULL, NULL) ==
        MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_counters(NULL, NULL) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_task_wait(NULL, 0) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_task_status(NULL, NULL, NULL) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(!mirai_task_cancel(NULL));
  CHECK(!mirai_task_is_resolved(NULL));
  CHECK(mirai_host_url(NULL) == NULL);
  CHECK(mirai_host_completion_fd(NULL) == -1);
  CHECK(mirai_daemon_run("tcp://127.0.0.1:1", NULL, NULL, NULL) ==
        MIRAI_RESULT_NULL_PARAMETER);
  mirai_host_free(NULL);
  mirai_task_free(NULL);
  mirai_task_array_free(NULL, 3);
  mirai_bytes_free(NULL);

  /* Payload given as NULL with a length. */
  CHECK_OK(mirai_host_listen("tcp://127.0.0.1:0", NULL, &host));
  mirai_task *t = NULL;
  CHECK(mirai_host_submit(host, NULL, 5, NULL, &t) == MIRAI_RESULT_NULL_PARAMETER);
  /* An empty payload is fine; with no daemon it stays queued, then the close resolves it. */
  CHECK_OK(mirai_host_submit(host, NULL, 0, NULL, &t));
  CHECK(!mirai_task_is_resolved(t));
  CHECK(mirai_task_wait(t, 10) == MIRAI_RESULT_TIMED_OUT);
  mirai_bytes out;
  CHECK(mirai_task_take_result(t, &out) == MIRAI_RESULT_INCORRECT_STATE);
  mirai_host_free(host);
  int32_t code = 0;
  mirai_status status;
  CHECK_OK(mirai_task_status(t, &status, &code));
  CHECK(status == MIRAI_STATUS_FAILED && code == 19);
  mirai_task_free(t);

  CHECK(strcmp(mirai_strerror(MIRAI_RESULT_TIMED_OUT), "Timed out") == 0);
  CHECK(strcmp(mirai_version(), MIRAI_VERSION) == 0);

  /* Enum values from C are checked, not trusted: out of range is a clear error. */
  CHECK(strcmp(mirai_strerror(999), "unknown result code") == 0);
  mirai_host_options *o = mirai_host_options_new();
  CHECK(mirai_host_options_set_auth(o, 7, NULL, 0) == MIRAI_RESULT_INVALID_ARGUMENT);
  mirai_last_error(why, sizeof why);
  CHECK(strstr(why, "7 is not a valid auth") != NULL);
  mirai_host_options_free(o);
  host = NULL;
  CHECK_OK(mirai_host_listen("tcp://127.0.0.1:0", NULL, &host));
  const char *argv[] = {"true"};
  mirai_jobs *jobs = NULL;
  CHECK(mirai_host_launch_cluster(host, 9, NULL, 0, NULL, NULL, argv, 1, 1, &jobs) ==
        MIRAI_RESULT_INVALID_ARGUMENT && jobs == NULL);
  mirai_host_free(host);
  mirai_daemon_options *d = mirai_daemon_options_new();
  CHECK(mirai_daemon_options_set_autoexit(d, -1, 0) == MIRAI_RESULT_INVALID_ARGUMENT);
  mirai_last_error(why, sizeof why);
  CHECK(strstr(why, "-1 is not a valid autoexit") != NULL);
  mirai_daemon_options_free(d);
}

/* Expects `call` to be refused as an invalid argument, with `text` in the message. */
#define REFUSED(call, text)                                 \
  do {                                                      \
    CHECK((call) == MIRAI_RESULT_INVALID_ARGUMENT);         \
    char why_[256];                                         \
    mirai_last_error(why_, sizeof why_);                    \
    CHECK(strstr(why_, text) != NULL);                      \
  } while (0)

/* Every setter checks its value: zeros that would silently mean something else, unknown enum
 * values, and secrets that do not fit their mode are refused, leaving the earlier setting. */
static void option_refusals(void) {
  mirai_host_options *o = mirai_host_options_new();
  CHECK(o != NULL);
  CHECK_OK(mirai_host_options_set_memory_limit(o, 1000));
  REFUSED(mirai_host_options_set_memory_limit(o, 0), "memory_limit must be at least 1");
  REFUSED(mirai_host_options_set_max_frame(o, 0), "max_frame must be at least 1");
  REFUSED(mirai_host_options_set_handshake_timeout_ms(o, 0), "handshake_timeout_ms must be at least 1");
  REFUSED(mirai_host_options_set_max_handshakes(o, 0), "max_handshakes must be at least 1");
  REFUSED(mirai_host_options_set_retry(o, 3, 0), "quarantine must be at least 1");
  const uint8_t *secret = (const uint8_t *)"0123456789abcdef";
  REFUSED(mirai_host_options_set_auth(o, MIRAI_AUTH_SECRET, secret, 15), "at least 16 bytes");
  REFUSED(mirai_host_options_set_auth(o, MIRAI_AUTH_SECRET, NULL, 0), "at least 16 bytes");
  REFUSED(mirai_host_options_set_auth(o, MIRAI_AUTH_DISABLED, secret, 16), "only MIRAI_AUTH_SECRET takes a secret");
  REFUSED(mirai_host_options_set_auth(o, -1, NULL, 0), "-1 is not a valid auth");
  CHECK(mirai_host_options_set_auth(o, MIRAI_AUTH_SECRET, NULL, 16) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_options_set_stream(o, NULL) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_options_set_init_blob(o, NULL, 3) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_options_set_tls(o, "chain", NULL, NULL, NULL) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_options_set_tls(o, "\xff", "key", NULL, NULL) == MIRAI_RESULT_INVALID_UTF8);
  CHECK(mirai_host_options_set_max_frame(NULL, 1) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_options_set_memory_limit(NULL, 1) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_options_set_max_handshakes(NULL, 1) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_options_set_heartbeat_ms(NULL, 1) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_options_set_peer_timeout_ms(NULL, 1) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_options_set_cancel_grace_ms(NULL, 1) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_options_set_retry(NULL, 1, 3) == MIRAI_RESULT_NULL_PARAMETER);
  /* What was accepted is what the host gets; the refusals changed nothing. */
  CHECK_OK(mirai_host_options_set_handshake_timeout_ms(o, 5000));
  CHECK_OK(mirai_host_options_set_max_handshakes(o, 64));
  CHECK_OK(mirai_host_options_set_retry(o, 2, 3));
  CHECK_OK(mirai_host_options_set_auth(o, MIRAI_AUTH_SECRET, secret, 16));
  /* Liveness: a peer timeout shorter than three heartbeats is refused when listening. */
  CHECK_OK(mirai_host_options_set_heartbeat_ms(o, 1000));
  CHECK_OK(mirai_host_options_set_peer_timeout_ms(o, 2000));
  mirai_host *host = NULL;
  REFUSED(mirai_host_listen("tcp://127.0.0.1:0", o, &host), "at least three heartbeats");
  CHECK(host == NULL);
  CHECK_OK(mirai_host_options_set_peer_timeout_ms(o, 3000));
  CHECK_OK(mirai_host_options_set_cancel_grace_ms(o, 0));
  CHECK_OK(mirai_host_options_set_cancel_grace_ms(o, 5000));
  CHECK_OK(mirai_host_listen("tcp://127.0.0.1:0", o, &host));
  mirai_host_options_free(o);
  mirai_memory mem;
  CHECK_OK(mirai_host_memory(host, &mem));
  CHECK(mem.limit == 1000);
  mirai_recoveries rec = {1, 1, 1, 1, 1};
  CHECK_OK(mirai_host_recoveries(host, &rec));
  CHECK(rec.requeued == 0 && rec.retried == 0 && rec.quarantined == 0);
  CHECK(rec.escalated == 0 && rec.surplus_copies == 0);
  CHECK(mirai_host_recoveries(host, NULL) == MIRAI_RESULT_NULL_PARAMETER);
  uint64_t barrier = 1;
  CHECK_OK(mirai_host_barrier(host, &barrier));
  CHECK(barrier == 0);
  CHECK(mirai_host_barrier(host, NULL) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_host_barrier(NULL, &barrier) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(strcmp(mirai_host_secret_hex(host), "30313233343536373839616263646566") == 0);
  mirai_host_free(host);
  mirai_host_options_free(NULL);

  mirai_daemon_options *d = mirai_daemon_options_new();
  CHECK(d != NULL);
  REFUSED(mirai_daemon_options_set_maxtasks(d, 0), "maxtasks must be at least 1");
  CHECK_OK(mirai_daemon_options_set_host_timeout_ms(d, 0));
  CHECK(mirai_daemon_options_set_host_timeout_ms(NULL, 1) == MIRAI_RESULT_NULL_PARAMETER);
  REFUSED(mirai_daemon_options_set_max_frame(d, 0), "max_frame must be at least 1");
  REFUSED(mirai_daemon_options_set_autoexit(d, 3, 200), "3 is not a valid autoexit");
  REFUSED(mirai_daemon_options_set_secret_hex(d, "abc"), "even number of digits");
  REFUSED(mirai_daemon_options_set_secret_hex(d, "zz"), "not hexadecimal");
  REFUSED(mirai_daemon_options_set_secret_hex(d, ""), "the secret is empty");
  CHECK(mirai_daemon_options_set_label(d, NULL) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_daemon_options_set_tls_ca(d, NULL) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_daemon_options_set_retry(NULL, true) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK_OK(mirai_daemon_options_set_maxtasks(d, 1));
  CHECK_OK(mirai_daemon_options_set_autoexit(d, MIRAI_AUTOEXIT_STAY, 0));
  mirai_daemon_options_free(d);
  mirai_daemon_options_free(NULL);

  CHECK(mirai_submit_options_set_timeout_ms(NULL, 1) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_submit_options_set_retry(NULL, 1) == MIRAI_RESULT_NULL_PARAMETER);
  {
    mirai_submit_options *r = mirai_submit_options_new();
    REFUSED(mirai_submit_options_set_retry(r, 1LL << 40), "retry must be below 2^32");
    CHECK_OK(mirai_submit_options_set_retry(r, 2));
    CHECK_OK(mirai_submit_options_set_retry(r, -1));
    mirai_submit_options_free(r);
  }
  CHECK(mirai_submit_options_set_notify(NULL, true) == MIRAI_RESULT_NULL_PARAMETER);
  CHECK(mirai_submit_options_set_callback(NULL, NULL, NULL) == MIRAI_RESULT_NULL_PARAMETER);
  mirai_submit_options_free(NULL);

  /* A success leaves the last message in place, as errno does. */
  char before[256], after[256];
  mirai_last_error(before, sizeof before);
  mirai_submit_options *s = mirai_submit_options_new();
  CHECK_OK(mirai_submit_options_set_timeout_ms(s, -1));
  mirai_submit_options_free(s);
  mirai_last_error(after, sizeof after);
  CHECK(strcmp(before, after) == 0 && strstr(after, "NULL") != NULL);
}

/* A daemon refused for a wrong secret is a log line on the host's stderr once asked for. */
static void refusal_logged(void) {
  CHECK(mirai_log_to_stderr(9) == MIRAI_RESULT_INVALID_ARGUMENT);
  FILE *capture = tmpfile();
  CHECK(capture != NULL);
  fflush(stderr);
  int saved = dup(2);
  CHECK(saved >= 0 && dup2(fileno(capture), 2) == 2);
  CHECK_OK(mirai_log_to_stderr(2));
  mirai_host *host = NULL;
  CHECK_OK(mirai_host_listen("tcp://127.0.0.1:0", NULL, &host));
  mirai_daemon_options *d = mirai_daemon_options_new();
  CHECK_OK(mirai_daemon_options_set_secret_hex(d, "00112233445566778899aabbccddeeff"));
  mirai_evaluator ev = {NULL, NULL, never_called, NULL, NULL};
  int32_t code = 0;
  CHECK(mirai_daemon_run(mirai_host_url(host), d, &ev, &code) != MIRAI_RESULT_OK);
  mirai_daemon_options_free(d);
  char text[4096] = {0};
  for (int i = 0; i < 200 && strstr(text, "failed authentication") == NULL; i++) {
    nanosleep(&(struct timespec){0, 10000000}, NULL);
    rewind(capture);
    size_t got = fread(text, 1, sizeof text - 1, capture);
    text[got] = 0;
  }
  CHECK_OK(mirai_log_to_stderr(0));
  mirai_host_free(host);
  CHECK(dup2(saved, 2) == 2);
  close(saved);
  fclose(capture);
  CHECK(strstr(text, "mirai: WARN host tcp://127.0.0.1:") != NULL);
  CHECK(strstr(text, "failed authentication") != NULL);
}

int main(int argc, char **argv) {
  CHECK(argc == 4);
  error_paths();
  option_refusals();
  refusal_logged();
  echo_daemons(argv[1]);
  exec_daemons(argv[1]);
  plugin_daemons(argv[1], argv[2]);
  launchers(argv[1], argv[3]);
  puts("host_and_daemons: ok");
  return 0;
}
