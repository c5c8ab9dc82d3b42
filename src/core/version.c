/* version.c: the versions natwrp reports (--version and natwrp_build_info). */
#include <llhttp.h>
#include <mbedtls/version.h>
#include <stdio.h>
#include <uv.h>
#include <wslay/wslayver.h>

#include "nw.h"
#include "version.h"

#define NW_STR_(x) #x
#define NW_STR(x) NW_STR_(x)

const char *nw_libuv_version(void) {
    return uv_version_string();
}

const char *nw_llhttp_version(void) {
    return NW_STR(LLHTTP_VERSION_MAJOR) "." NW_STR(LLHTTP_VERSION_MINOR) "." NW_STR(
        LLHTTP_VERSION_PATCH);
}

const char *nw_wslay_version(void) {
#ifdef WSLAY_VERSION
    return WSLAY_VERSION;
#else
    return "unknown";
#endif
}

const char *nw_mbedtls_version(void) {
    static char v[32];
#if defined(MBEDTLS_VERSION_C)
    if (!v[0])
        mbedtls_version_get_string(v); /* at most 9 bytes with the NUL */
#else
    if (!v[0])
        snprintf(v, sizeof(v), "%s", MBEDTLS_VERSION_STRING);
#endif
    return v;
}

const char *nw_lib_versions(void) {
    static char s[160];
    if (!s[0])
        snprintf(s, sizeof(s), "libuv %s, llhttp %s, wslay %s, mbedtls %s", nw_libuv_version(),
                 nw_llhttp_version(), nw_wslay_version(), nw_mbedtls_version());
    return s;
}

void nw_print_version(void) { /* natwrp --version */
    printf("natwrp %s (protocol natwrp.%d)\n%s\n", NW_VERSION, NW_PROTO_VERSION,
           nw_lib_versions());
}
