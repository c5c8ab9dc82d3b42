/* test_agent.c: nw_agent_main's start-up frees what it built on every early
 * exit. Each allocation before the event loop starts is made to fail in
 * turn (nw__alloc_fail_in, src/core/util.c); LeakSanitizer then checks that
 * nothing was left behind: the tunnel slots fail after both TLS
 * configurations exist, which once leaked them. */
#include <sanitizer/lsan_interface.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "nw.h"
#include "unit.h"

static char *argv_tls[] = {"agent",        "--id",     "t",         "--remote",
                           "https://127.0.0.1:9",  "--local",  "https://127.0.0.1:9",
                           "--insecure",   "--local-insecure", "--log-level", "error", NULL};

/* Fail the n-th allocation of one start-up; 0 when it failed and
 * returned (the loop never ran), with its exit code in *rc. */
static int start_failing(unsigned long n, int *rc) {
    nw__alloc_fail_in = n;
    *rc = nw_agent_main((int)(sizeof(argv_tls) / sizeof(argv_tls[0])) - 1, argv_tls);
    return nw__alloc_fail_in == 0 ? 0 : -1;
}

/* Start-up's allocations in order: the agent, the REMOTE_URL TLS
 * configuration, the LOCAL_URL one, the tunnel slots. */
UNIT_TEST(agent_oom_at_start_leaks_nothing) {
    static const int want[] = {1, 2, 2, 1};
    unsigned long n;
    int rc;
    for (n = 1; n <= 4; n++) {
        CHECK_EQ(start_failing(n, &rc), 0);
        CHECK_EQ(rc, want[n - 1]);
        CHECK_EQ(__lsan_do_recoverable_leak_check(), 0);
    }
}

int main(void) {
    static const unit_case_t cases[] = {UNIT_CASE(agent_oom_at_start_leaks_nothing)};
    char dir[] = "/tmp/natwrp_test_agent_XXXXXX";
    int rc;
    /* No .env here (the agent reads one from its working directory), and
     * a run that reached the event loop would never return: stop it. */
    if (!mkdtemp(dir) || chdir(dir) != 0)
        return 1;
    alarm(20);
    rc = unit_run(__FILE__, cases, sizeof(cases) / sizeof(cases[0]));
    rmdir(dir);
    return rc;
}
