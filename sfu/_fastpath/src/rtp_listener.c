/* Which producer stream a packet belongs to (rtp_listener.h). */
#include "rtp_listener.h"

#include <stdlib.h>
#include <string.h>

int sfu_rtp_listener_add(sfu_transport_t *t, uint32_t ssrc, sfu_producer_t *p, int stream, int is_rtx)
{
    for (uint32_t i = 0; i < t->nroutes; i++)
        if (t->routes[i].ssrc == ssrc)
            return -1;
    if (t->nroutes == t->routes_cap) {
        uint32_t ncap = t->routes_cap ? t->routes_cap * 2 : 8;
        struct sfu_route *r = realloc(t->routes, ncap * sizeof(*r));
        if (!r)
            return -1;
        t->routes = r;
        t->routes_cap = ncap;
    }
    t->routes[t->nroutes].ssrc = ssrc;
    t->routes[t->nroutes].producer = p;
    t->routes[t->nroutes].stream = (uint16_t)stream;
    t->routes[t->nroutes].is_rtx = (uint16_t)is_rtx;
    t->nroutes++;
    return 0;
}

int sfu_rtp_listener_add_pending(sfu_transport_t *t, sfu_producer_t *p, int stream, int is_rtx)
{
    if (t->npending == t->pending_cap) {
        uint32_t ncap = t->pending_cap ? t->pending_cap * 2 : 8;
        struct sfu_route *r = realloc(t->pending, ncap * sizeof(*r));
        if (!r)
            return -1;
        t->pending = r;
        t->pending_cap = ncap;
    }
    t->pending[t->npending].ssrc = 0;
    t->pending[t->npending].producer = p;
    t->pending[t->npending].stream = (uint16_t)stream;
    t->pending[t->npending].is_rtx = (uint16_t)is_rtx;
    t->npending++;
    return 0;
}

void sfu_rtp_listener_remove_producer(sfu_transport_t *t, sfu_producer_t *p)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < t->nroutes; i++)
        if (t->routes[i].producer != p)
            t->routes[j++] = t->routes[i];
    t->nroutes = j;
    j = 0;
    for (uint32_t i = 0; i < t->npending; i++)
        if (t->pending[i].producer != p)
            t->pending[j++] = t->pending[i];
    t->npending = j;
}

static const sfu_rtp_ext_elem_t *ext_find(const sfu_rtp_ext_elem_t *elems, int n, uint8_t id)
{
    if (!id)
        return NULL;
    for (int i = 0; i < n; i++)
        if (elems[i].id == id)
            return &elems[i];
    return NULL;
}

static int ext_equals(const uint8_t *buf, const sfu_rtp_ext_elem_t *el, const uint8_t *value, uint8_t len)
{
    return el && len && el->length == len && memcmp(buf + el->offset, value, len) == 0;
}

/* A packet from an SSRC no route knows: the first pending stream it names
 * (mediasoup's RtpListener order: the producer's MID, then the stream's RID,
 * or the repaired RID for RTX) is bound to its SSRC from now on. */
static struct sfu_route *learn(sfu_engine_t *e, sfu_transport_t *t, const uint8_t *buf, const sfu_rtp_t *rtp)
{
    if (!rtp->extension)
        return NULL;
    sfu_rtp_ext_elem_t elems[SFU_RTP_MAX_EXTENSIONS];
    int n = sfu_rtp_ext_elements(buf, rtp, elems, SFU_RTP_MAX_EXTENSIONS);
    if (n <= 0)
        return NULL;
    for (uint32_t i = 0; i < t->npending; i++) {
        struct sfu_route pr = t->pending[i];
        sfu_producer_t *p = pr.producer;
        int is_rtx = p->rtx_apt[rtp->payload_type] != 0xff;
        if (is_rtx != pr.is_rtx || (!is_rtx && p->pt_map[rtp->payload_type] == SFU_PT_NONE))
            continue;
        const sfu_rtp_ext_elem_t *mid = ext_find(elems, n, p->mid_ext_in);
        int mid_ok = ext_equals(buf, mid, p->mid, p->mid_len);
        if (mid && p->mid_len && !mid_ok)
            continue; /* another producer's MID */
        sfu_producer_stream_t *st = &p->streams[pr.stream];
        int stream_ok;
        if (st->rid_len) {
            const sfu_rtp_ext_elem_t *rid = ext_find(elems, n, is_rtx ? p->rrid_ext_in : p->rid_ext_in);
            if (!rid && is_rtx)
                rid = ext_find(elems, n, p->rid_ext_in);
            stream_ok = ext_equals(buf, rid, st->rid, st->rid_len);
        } else {
            stream_ok = mid_ok && p->nstreams == 1;
        }
        if (!stream_ok)
            continue;
        if (sfu_rtp_listener_add(t, rtp->ssrc, p, pr.stream, pr.is_rtx) < 0)
            return NULL;
        if (is_rtx)
            st->rtx_ssrc = rtp->ssrc;
        else
            st->ssrc = rtp->ssrc;
        t->pending[i] = t->pending[--t->npending];
        e->counters[SFU_C_SSRC_LEARNED]++;
        return &t->routes[t->nroutes - 1];
    }
    return NULL;
}

struct sfu_route *sfu_rtp_listener_find(sfu_engine_t *e, sfu_transport_t *t, const uint8_t *buf, const sfu_rtp_t *rtp)
{
    for (uint32_t i = 0; i < t->nroutes; i++)
        if (t->routes[i].ssrc == rtp->ssrc)
            return &t->routes[i];
    return t->npending ? learn(e, t, buf, rtp) : NULL;
}
