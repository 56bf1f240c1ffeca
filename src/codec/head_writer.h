/*
 * A bounded writer for the HTTP heads the codecs write (handshake.c,
 * http_msg.c): once something does not fit, nothing more is written and
 * the caller reports the overflow instead of sending a partial head.
 * Internal to src/codec.
 */
#ifndef WSGATE_CODEC_HEAD_WRITER_H
#define WSGATE_CODEC_HEAD_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

typedef struct wsg_head_writer_s {
    char *out;
    size_t cap;
    size_t len;
    bool overflow;
} wsg_head_writer_t;

static inline void hw_put(wsg_head_writer_t *w, const char *s, size_t n) {
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = true;
        return;
    }
    memcpy(w->out + w->len, s, n);
    w->len += n;
}

static inline void hw_put_str(wsg_head_writer_t *w, const char *s) { hw_put(w, s, strlen(s)); }

/* "NAME: VALUE\r\n" */
static inline void hw_put_header(wsg_head_writer_t *w, const char *name, size_t namelen,
                                 const char *value, size_t valuelen) {
    hw_put(w, name, namelen);
    hw_put(w, ": ", 2);
    hw_put(w, value, valuelen);
    hw_put(w, "\r\n", 2);
}

#endif /* WSGATE_CODEC_HEAD_WRITER_H */
