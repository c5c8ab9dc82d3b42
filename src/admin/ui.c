/* ui.c: the dashboard's files, embedded at build time (scripts/embed.sh
 * turns src/admin/ui/ into build/gen/ui_files.h), served on the admin
 * listener: "/" is index.html, "/ui/NAME" the rest. The page itself talks
 * to /api/status (and on an agent /api/requests) with the admin token the
 * browser already sent for "/". */
#include <string.h>

#include "ui.h"

typedef struct {
    const char *name;
    const unsigned char *data;
    size_t len;
} ui_file_t;

#include "ui_files.h"

static const char *ctype_of(const char *name) {
    const char *dot = strrchr(name, '.');
    if (dot && strcmp(dot, ".html") == 0)
        return "text/html; charset=utf-8";
    if (dot && strcmp(dot, ".js") == 0)
        return "text/javascript; charset=utf-8";
    if (dot && strcmp(dot, ".css") == 0)
        return "text/css; charset=utf-8";
    return "application/octet-stream";
}

static void serve_file(nw_admin_req_t *req, const char *name) {
    size_t i;
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        nw_admin_respond(req, 405, NULL, "method not allowed\n", 19);
        return;
    }
    for (i = 0; i < NW_ARRAY_LEN(ui_files); i++)
        if (strcmp(ui_files[i].name, name) == 0) {
            nw_admin_respond(req, 200, ctype_of(name), ui_files[i].data, ui_files[i].len);
            return;
        }
    nw_admin_respond(req, 404, NULL, "not found\n", 10);
}

static void page_index(nw_admin_req_t *req, void *ud) {
    (void)ud;
    if (strcmp(req->path, "/") != 0) { /* "/" may be a prefix: only itself here */
        nw_admin_respond(req, 404, NULL, "not found\n", 10);
        return;
    }
    serve_file(req, "index.html");
}

static void page_asset(nw_admin_req_t *req, void *ud) {
    const char *name = req->path + strlen("/ui/");
    (void)ud;
    serve_file(req, strchr(name, '/') ? "" : name);
}

void nw_admin_ui(nw_admin_t *a) {
    /* Out of memory at start-up: the admin listener answers 404 there. */
    (void)nw_admin_handle(a, "/", page_index, NULL);
    (void)nw_admin_handle(a, "/ui/", page_asset, NULL);
}
