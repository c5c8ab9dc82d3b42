/* ui.h: the dashboard (src/admin/ui/, embedded at build time) on the
 * admin listener of either role. */
#ifndef NW_UI_H
#define NW_UI_H

#include "admin.h"

/* Register "/" (the page) and "/ui/" (its script and style sheet). */
void nw_admin_ui(nw_admin_t *a);

#endif
