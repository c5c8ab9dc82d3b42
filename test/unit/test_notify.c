/* test_notify.c: sd_notify without libsystemd (src/core/notify.c): the
 * NOTIFY_SOCKET address, WATCHDOG_USEC/WATCHDOG_PID, and a real datagram. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "notify.h"
#include "unit.h"

UNIT_TEST(addr_path) {
    struct sockaddr_un sa;
    socklen_t len;
    CHECK_EQ(nw_notify_addr("/run/systemd/notify", &sa, &len), 0);
    CHECK_EQ(sa.sun_family, AF_UNIX);
    CHECK_STR(sa.sun_path, "/run/systemd/notify");
    CHECK_EQ(len, offsetof(struct sockaddr_un, sun_path) + strlen("/run/systemd/notify") + 1);
}

UNIT_TEST(addr_abstract) {
    struct sockaddr_un sa;
    socklen_t len;
    CHECK_EQ(nw_notify_addr("@natwrp/x", &sa, &len), 0);
    CHECK_EQ(sa.sun_path[0], '\0');
    CHECK(memcmp(sa.sun_path + 1, "natwrp/x", 8) == 0);
    CHECK_EQ(len, offsetof(struct sockaddr_un, sun_path) + 9); /* no terminator */
}

UNIT_TEST(addr_refused) {
    struct sockaddr_un sa;
    socklen_t len;
    char big[200];
    CHECK_EQ(nw_notify_addr(NULL, &sa, &len), -1);
    CHECK_EQ(nw_notify_addr("", &sa, &len), -1);
    CHECK_EQ(nw_notify_addr("run/notify", &sa, &len), -1); /* relative */
    CHECK_EQ(nw_notify_addr("@", &sa, &len), -1);
    CHECK_EQ(nw_notify_addr("/", &sa, &len), -1);
    memset(big, 'a', sizeof(big));
    big[0] = '/';
    big[sizeof(big) - 1] = '\0';
    CHECK_EQ(nw_notify_addr(big, &sa, &len), -1); /* over sun_path */
    big[sizeof(sa.sun_path)] = '\0';              /* exactly sun_path: no room for NUL */
    CHECK_EQ(nw_notify_addr(big, &sa, &len), -1);
    big[0] = '@'; /* abstract names need no NUL */
    CHECK_EQ(nw_notify_addr(big, &sa, &len), 0);
}

UNIT_TEST(watchdog_usec) {
    CHECK_EQ(nw_watchdog_usec(NULL, NULL, 42), 0);
    CHECK_EQ(nw_watchdog_usec("", NULL, 42), 0);
    CHECK_EQ(nw_watchdog_usec("0", NULL, 42), 0);
    CHECK_EQ(nw_watchdog_usec("-5", NULL, 42), 0);
    CHECK_EQ(nw_watchdog_usec("12x", NULL, 42), 0);
    CHECK_EQ(nw_watchdog_usec("99999999999999999999999", NULL, 42), 0);
    CHECK_EQ(nw_watchdog_usec("200000", NULL, 42), 200000);
    CHECK_EQ(nw_watchdog_usec("200000", "", 42), 200000);
    CHECK_EQ(nw_watchdog_usec("200000", "42", 42), 200000);
    CHECK_EQ(nw_watchdog_usec("200000", "43", 42), 0);  /* another process's */
    CHECK_EQ(nw_watchdog_usec("200000", "4x", 42), 0);
}

/* A real datagram socket receives exactly what nw_notify sends; unset,
 * nothing is sent. */
UNIT_TEST(notify_sends) {
    char path[108], buf[256], env[120];
    struct sockaddr_un sa;
    socklen_t len;
    ssize_t n;
    int fd;
    snprintf(path, sizeof(path), "/tmp/nw-notify-%ld.sock", (long)getpid());
    unlink(path);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK_EQ(nw_notify_addr(path, &sa, &len), 0);
    CHECK_EQ(bind(fd, (struct sockaddr *)&sa, len), 0);
    unsetenv("NOTIFY_SOCKET");
    CHECK_EQ(nw_notify("READY=1"), 0);
    snprintf(env, sizeof(env), "%s", path);
    setenv("NOTIFY_SOCKET", env, 1);
    CHECK_EQ(nw_notify("READY=1\nSTATUS=x"), 1);
    n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    CHECK_EQ(n, 16);
    buf[n] = '\0';
    CHECK_STR(buf, "READY=1\nSTATUS=x");
    CHECK_EQ(recv(fd, buf, sizeof(buf), MSG_DONTWAIT), -1); /* one datagram only */
    nw_notify_reloading();
    n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    CHECK(n > 0);
    buf[n] = '\0';
    CHECK(strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0);
    CHECK(buf[27] >= '1' && buf[27] <= '9');
    close(fd);
    unlink(path);
    CHECK(nw_notify("READY=1") < 0); /* nobody listens: an error, no crash */
    unsetenv("NOTIFY_SOCKET");
}

UNIT_MAIN(UNIT_CASE(addr_path), UNIT_CASE(addr_abstract), UNIT_CASE(addr_refused),
          UNIT_CASE(watchdog_usec), UNIT_CASE(notify_sends))
