/* The R package's C layer over libmirai: routine registration. The routines live in host.c,
 * task.c, launch.c, urls.c, daemon.c, state.c, serialize.c and adopt.c. */
#include "rmirai.h"

#include <R_ext/Rdynload.h>

static const R_CallMethodDef calls[] = {
    {"rmirai_listen", (DL_FUNC)&rmirai_listen, 8},
    {"rmirai_tls_ca", (DL_FUNC)&rmirai_tls_ca, 1},
    {"rmirai_url", (DL_FUNC)&rmirai_url, 1},
    {"rmirai_secret", (DL_FUNC)&rmirai_secret, 1},
    {"rmirai_launch", (DL_FUNC)&rmirai_launch, 4},
    {"rmirai_wait_connections", (DL_FUNC)&rmirai_wait_connections, 2},
    {"rmirai_submit", (DL_FUNC)&rmirai_submit, 5},
    {"rmirai_setup", (DL_FUNC)&rmirai_setup, 2},
    {"rmirai_state", (DL_FUNC)&rmirai_state, 0},
    {"rmirai_state_changed", (DL_FUNC)&rmirai_state_changed, 1},
    {"rmirai_collect", (DL_FUNC)&rmirai_collect, 1},
    {"rmirai_data", (DL_FUNC)&rmirai_data, 1},
    {"rmirai_on_done", (DL_FUNC)&rmirai_on_done, 2},
    {"rmirai_use_later", (DL_FUNC)&rmirai_use_later, 1},
    {"rmirai_memory", (DL_FUNC)&rmirai_memory, 1},
    {"rmirai_everywhere", (DL_FUNC)&rmirai_everywhere, 3},
    {"rmirai_resolved", (DL_FUNC)&rmirai_resolved, 1},
    {"rmirai_cancel", (DL_FUNC)&rmirai_cancel, 1},
    {"rmirai_counters", (DL_FUNC)&rmirai_counters, 1},
    {"rmirai_race", (DL_FUNC)&rmirai_race, 3},
    {"rmirai_close", (DL_FUNC)&rmirai_close, 2},
    {"rmirai_daemon", (DL_FUNC)&rmirai_daemon, 5},
    {"rmirai_launch_ssh", (DL_FUNC)&rmirai_launch_ssh, 7},
    {"rmirai_launch_remote", (DL_FUNC)&rmirai_launch_remote, 6},
    {"rmirai_launch_cluster", (DL_FUNC)&rmirai_launch_cluster, 6},
    {"rmirai_cancel_jobs", (DL_FUNC)&rmirai_cancel_jobs, 1},
    {"rmirai_wait_launched", (DL_FUNC)&rmirai_wait_launched, 3},
    {"rmirai_http_request", (DL_FUNC)&rmirai_http_request, 4},
    {"rmirai_interfaces", (DL_FUNC)&rmirai_interfaces, 0},
    {"rmirai_random_name", (DL_FUNC)&rmirai_random_name, 1},
    {"rmirai_random_hex", (DL_FUNC)&rmirai_random_hex, 1},
    {"rmirai_take_secret", (DL_FUNC)&rmirai_take_secret, 0},
    {NULL, NULL, 0}};

void R_init_mirai(DllInfo *dll) {
  host_tag = Rf_install("mirai_host");
  task_tag = Rf_install("mirai_task");
  s_handle = Rf_install("handle");
  s_profile = Rf_install("profile");
  s_value = Rf_install("value");
  s_host = Rf_install("host");
  s_data = Rf_install("data");
  s_id = Rf_install("id");
  s_read_hook = Rf_install("read_hook");
  s_write_hook = Rf_install("write_hook");
  s_result = Rf_install("result");
  task_init();
  daemon_init();
  adopt_init();
  /* Warnings (a daemon refused for want of the secret, a connection lost on an error) on the
   * session's stderr: R has no other channel from libmirai's threads. */
  mirai_log_to_stderr(2);
  R_registerRoutines(dll, NULL, calls, NULL, NULL);
  R_useDynamicSymbols(dll, FALSE);
  R_forceSymbols(dll, TRUE);
}
