/* trim.c: the heap trimmer: gives freed heap back to the system after a
 * burst of connections or requests. */
#include <malloc.h>

#include "trim.h"

#define TRIM_EVERY_MS 5000
#define TRIM_MIN_PEAK 64 /* below this, what could be returned is not worth a trim */

/* glibc keeps freed memory for reuse; after 10,000 streams come and go
 * that is tens of MiB that RSS would never give back. */
static void on_trim(uv_timer_t *h) {
    nw_trimmer_t *tr = h->data;
    if (tr->peak >= TRIM_MIN_PEAK && tr->now < tr->peak / 2) {
        malloc_trim(0);
        tr->peak = tr->now;
    }
}

void nw_trimmer_start(uv_loop_t *loop, nw_trimmer_t *tr) {
    uv_timer_init(loop, &tr->timer);
    tr->timer.data = tr;
    uv_timer_start(&tr->timer, on_trim, TRIM_EVERY_MS, TRIM_EVERY_MS);
    uv_unref((uv_handle_t *)&tr->timer); /* never keeps the loop alive */
}
