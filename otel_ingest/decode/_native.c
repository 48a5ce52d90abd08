/* The compiled decoder: OTLP ExportLogsServiceRequest protobuf bytes → Arrow arrays of the
 * v1 logs table (handed over by the Arrow C data interface, no copy), with the GIL released
 * while it works (docs/decoder.md).
 *
 * It reproduces otel_ingest/flatten (the reference) exactly for every request it accepts;
 * tests/test_decoder.py compares the two on captures, generated messages and mutated bodies.
 * Whatever it is not sure to reproduce it refuses to decide: decode_logs() returns None and the
 * caller runs the Python path, which answers it (a 400 for an invalid body, a 413/503 for a
 * body whose rows would be too large). The request is first checked whole against the message
 * shapes below (wire types, lengths, UTF-8, nesting); rows are extracted only from a body that
 * passed, so the extraction code needs no error handling beyond the record-rejection rules.
 *
 * Fields the protos define but this decoder does not read (Resource.entity_refs, the *_strindex
 * fields of profiles) are declined too: a body that uses them takes the Python path.
 *
 * None means: not valid protobuf, a group or a wire type protobuf would treat differently, a
 * singular message field sent twice (protobuf merges them), a varint that does not fit its
 * field, nesting deeper than CHECK_DEPTH, a string column past 2 GiB, or output past the
 * caller's byte limit.
 */
#ifndef OTEL_NATIVE_FUZZ /* fuzz/: the same code without Python, driven by libFuzzer */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ANY_VALUE_DEPTH 32 /* otel_ingest.flatten.common.MAX_ANY_VALUE_DEPTH */
#define CHECK_DEPTH 90         /* protobuf's own limit is 100; deeper bodies go to Python */
#define INT32_LIMIT 0x7fffffffLL

/* ------------------------------------------------------------------------------------ */
/* Growable byte buffers (malloc: they are filled without the GIL).                       */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (b->p && b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const void *src, size_t n) {
    if (buf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static int buf_str(Buf *b, const char *s) { return buf_put(b, s, strlen(s)); }

static void buf_free(Buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ------------------------------------------------------------------------------------ */
/* Status codes.                                                                          */

enum { OK = 0, UNDECIDED = 1, NOMEM = 2, REJECT = 3 };

/* ------------------------------------------------------------------------------------ */
/* Protobuf wire reading.                                                                 */

typedef struct {
    const uint8_t *p, *end;
} Rd;

static const uint8_t NOTHING[1] = {0}; /* stands for an absent message: no arithmetic on NULL */

static int rd_varint(Rd *r, uint64_t *out) {
    uint64_t v = 0;
    *out = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end) return -1;
        uint8_t byte = *r->p++;
        if (i == 9 && byte > 1) {
            r->p = r->end;
            return -1;
        }
        v |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* Readers that fail move to the end, so that no loop over a message can stall. */
static int rd_tag(Rd *r, uint32_t *field, int *wt) {
    uint64_t tag;
    const uint8_t *start = r->p;
    *field = 0;
    *wt = 0;
    if (rd_varint(r, &tag) || r->p - start > 5 || tag > 0xffffffffULL) {
        r->p = r->end;
        return -1;
    }
    *field = (uint32_t)(tag >> 3);
    *wt = (int)(tag & 7);
    return *field == 0 ? -1 : 0;
}

static int rd_bytes(Rd *r, const uint8_t **p, size_t *n) {
    uint64_t len;
    *p = NULL;
    *n = 0;
    if (rd_varint(r, &len) || len > (uint64_t)(r->end - r->p)) {
        r->p = r->end;
        return -1;
    }
    *p = r->p;
    *n = (size_t)len;
    r->p += len;
    return 0;
}

static int rd_fixed64(Rd *r, uint64_t *v) {
    *v = 0;
    if (r->end - r->p < 8) {
        r->p = r->end;
        return -1;
    }
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--) x = (x << 8) | r->p[i];
    *v = x;
    r->p += 8;
    return 0;
}

static int rd_fixed32(Rd *r, uint32_t *v) {
    *v = 0;
    if (r->end - r->p < 4) {
        r->p = r->end;
        return -1;
    }
    *v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
    r->p += 4;
    return 0;
}

/* Skip an unknown field; groups (3, 4) and wire types 6, 7 are left to protobuf. */
static int rd_skip(Rd *r, int wt) {
    uint64_t v;
    const uint8_t *p;
    size_t n;
    uint32_t f32;
    switch (wt) {
        case 0: return rd_varint(r, &v);
        case 1: return rd_fixed64(r, &v);
        case 2: return rd_bytes(r, &p, &n);
        case 5: return rd_fixed32(r, &f32);
        default: r->p = r->end; return -1;
    }
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= need) return 0;
        for (size_t k = 1; k <= need; k++) {
            uint8_t cc = s[i + k];
            if ((cc & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += need + 1;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------ */
/* Message shapes, for the check of the whole body.                                      */

enum { K_VARINT, K_INT32, K_UINT32, K_FIXED64, K_FIXED32, K_STRING, K_BYTES, K_MSG, K_MSG1, K_UNSUPPORTED };

typedef struct MsgSpec MsgSpec;
typedef struct {
    uint32_t num;
    int kind;
    const MsgSpec *sub;
} FieldSpec;
struct MsgSpec {
    const char *name;
    int nfields;
    const FieldSpec *fields;
};

static int wire_type_of(int kind) {
    switch (kind) {
        case K_VARINT:
        case K_INT32:
        case K_UINT32: return 0;
        case K_FIXED64: return 1;
        case K_FIXED32: return 5;
        default: return 2;
    }
}

extern const MsgSpec ANY_VALUE, KEY_VALUE;
static const FieldSpec ARRAY_VALUE_FIELDS[] = {{1, K_MSG, &ANY_VALUE}};
static const MsgSpec ARRAY_VALUE = {"ArrayValue", 1, ARRAY_VALUE_FIELDS};
static const FieldSpec KVLIST_FIELDS[] = {{1, K_MSG, &KEY_VALUE}};
static const MsgSpec KVLIST = {"KeyValueList", 1, KVLIST_FIELDS};
static const FieldSpec ANY_VALUE_FIELDS[] = {
    {1, K_STRING, NULL}, {2, K_VARINT, NULL},        {3, K_VARINT, NULL}, {4, K_FIXED64, NULL},
    {5, K_MSG1, &ARRAY_VALUE}, {6, K_MSG1, &KVLIST}, {7, K_BYTES, NULL}, {8, K_UNSUPPORTED, NULL} /* strindex */
};
const MsgSpec ANY_VALUE = {"AnyValue", 8, ANY_VALUE_FIELDS};
static const FieldSpec KEY_VALUE_FIELDS[] = {{1, K_STRING, NULL}, {2, K_MSG1, &ANY_VALUE}, {3, K_UNSUPPORTED, NULL}};
const MsgSpec KEY_VALUE = {"KeyValue", 3, KEY_VALUE_FIELDS};

static const FieldSpec RESOURCE_FIELDS[] = {
    {1, K_MSG, &KEY_VALUE}, {2, K_UINT32, NULL}, {3, K_UNSUPPORTED, NULL} /* entity_refs */
};
static const MsgSpec RESOURCE = {"Resource", 3, RESOURCE_FIELDS};
static const FieldSpec SCOPE_FIELDS[] = {
    {1, K_STRING, NULL}, {2, K_STRING, NULL}, {3, K_MSG, &KEY_VALUE}, {4, K_UINT32, NULL}};
static const MsgSpec SCOPE = {"InstrumentationScope", 4, SCOPE_FIELDS};

static const FieldSpec LOG_RECORD_FIELDS[] = {
    {1, K_FIXED64, NULL}, {2, K_INT32, NULL},  {3, K_STRING, NULL},  {5, K_MSG1, &ANY_VALUE},
    {6, K_MSG, &KEY_VALUE}, {7, K_UINT32, NULL}, {8, K_FIXED32, NULL}, {9, K_BYTES, NULL},
    {10, K_BYTES, NULL},    {11, K_FIXED64, NULL}, {12, K_STRING, NULL},
};
static const MsgSpec LOG_RECORD = {"LogRecord", 11, LOG_RECORD_FIELDS};
static const FieldSpec SCOPE_LOGS_FIELDS[] = {{1, K_MSG1, &SCOPE}, {2, K_MSG, &LOG_RECORD}, {3, K_STRING, NULL}};
static const MsgSpec SCOPE_LOGS = {"ScopeLogs", 3, SCOPE_LOGS_FIELDS};
static const FieldSpec RESOURCE_LOGS_FIELDS[] = {{1, K_MSG1, &RESOURCE}, {2, K_MSG, &SCOPE_LOGS}, {3, K_STRING, NULL}};
static const MsgSpec RESOURCE_LOGS = {"ResourceLogs", 3, RESOURCE_LOGS_FIELDS};
static const FieldSpec LOGS_REQUEST_FIELDS[] = {{1, K_MSG, &RESOURCE_LOGS}};
static const MsgSpec LOGS_REQUEST = {"ExportLogsServiceRequest", 1, LOGS_REQUEST_FIELDS};

static const MsgSpec *const ALL_SPECS[] = {&ANY_VALUE, &ARRAY_VALUE, &KVLIST, &KEY_VALUE, &RESOURCE, &SCOPE,
                                           &LOG_RECORD, &SCOPE_LOGS, &RESOURCE_LOGS, &LOGS_REQUEST};

/* OK when the message is one protobuf would parse and this decoder reads the same way. */
static int check_message(const MsgSpec *spec, const uint8_t *p, size_t n, int depth) {
    if (depth > CHECK_DEPTH) return UNDECIDED;
    if (!p) p = NOTHING, n = 0;
    Rd r = {p, p + n};
    uint32_t seen = 0; /* singular message fields already met (by index in spec) */
    while (r.p < r.end) {
        uint32_t field;
        int wt;
        if (rd_tag(&r, &field, &wt)) return UNDECIDED;
        int index = -1;
        for (int i = 0; i < spec->nfields; i++)
            if (spec->fields[i].num == field) {
                index = i;
                break;
            }
        if (index < 0) {
            if (rd_skip(&r, wt)) return UNDECIDED;
            continue;
        }
        const FieldSpec *f = &spec->fields[index];
        if (f->kind == K_UNSUPPORTED || wt != wire_type_of(f->kind)) return UNDECIDED;
        uint64_t v;
        uint32_t v32;
        const uint8_t *sub;
        size_t len;
        switch (f->kind) {
            case K_VARINT:
                if (rd_varint(&r, &v)) return UNDECIDED;
                break;
            case K_INT32: /* must be what protobuf keeps: a sign-extended int32 */
                if (rd_varint(&r, &v) || ((int64_t)v < INT32_MIN || (int64_t)v > INT32_MAX)) return UNDECIDED;
                break;
            case K_UINT32:
                if (rd_varint(&r, &v) || v > 0xffffffffULL) return UNDECIDED;
                break;
            case K_FIXED64:
                if (rd_fixed64(&r, &v)) return UNDECIDED;
                break;
            case K_FIXED32:
                if (rd_fixed32(&r, &v32)) return UNDECIDED;
                break;
            case K_STRING:
                if (rd_bytes(&r, &sub, &len) || !utf8_valid(sub, len)) return UNDECIDED;
                break;
            case K_BYTES:
                if (rd_bytes(&r, &sub, &len)) return UNDECIDED;
                break;
            case K_MSG1:
                if (seen & (1u << index)) return UNDECIDED;
                seen |= 1u << index;
                /* fall through */
            case K_MSG: {
                if (rd_bytes(&r, &sub, &len)) return UNDECIDED;
                int status = check_message(f->sub, sub, len, depth + 1);
                if (status) return status;
                break;
            }
            default: return UNDECIDED;
        }
    }
    return OK;
}

/* ------------------------------------------------------------------------------------ */
/* Reading checked messages (no error paths: the body passed check_message).             */

/* Iterate the occurrences of one length-delimited field. */
typedef struct {
    Rd r;
    uint32_t field;
} Iter;

static Iter iter_of(const uint8_t *p, size_t n, uint32_t field) {
    if (!p) p = NOTHING, n = 0;
    Iter it = {{p, p + n}, field};
    return it;
}

static int iter_next(Iter *it, const uint8_t **p, size_t *n) {
    while (it->r.p < it->r.end) {
        uint32_t field;
        int wt;
        rd_tag(&it->r, &field, &wt);
        if (field == it->field && wt == 2) {
            rd_bytes(&it->r, p, n);
            return 1;
        }
        rd_skip(&it->r, wt);
    }
    return 0;
}

/* The last occurrence of a length-delimited field; found=0 if absent. */
static int last_bytes(const uint8_t *p, size_t n, uint32_t field, const uint8_t **out, size_t *len) {
    Iter it = iter_of(p, n, field);
    int found = 0;
    const uint8_t *q;
    size_t m;
    while (iter_next(&it, &q, &m)) {
        *out = q;
        *len = m;
        found = 1;
    }
    if (!found) {
        *out = NULL;
        *len = 0;
    }
    return found;
}

enum { AV_NONE, AV_STRING, AV_BOOL, AV_INT, AV_DOUBLE, AV_ARRAY, AV_KVLIST, AV_BYTES };

typedef struct {
    int kind;
    uint64_t scalar;
    const uint8_t *p;
    size_t n;
} Any;

/* The oneof member of an AnyValue that protobuf keeps: the last one on the wire. */
static Any any_read(const uint8_t *p, size_t n) {
    Any a = {AV_NONE, 0, NULL, 0};
    if (!p) p = NOTHING, n = 0;
    Rd r = {p, p + n};
    while (r.p < r.end) {
        uint32_t field;
        int wt;
        rd_tag(&r, &field, &wt);
        if (field >= 1 && field <= 7) {
            a.kind = (int)field; /* AV_* numbers follow the field numbers */
            if (wt == 2)
                rd_bytes(&r, &a.p, &a.n);
            else if (wt == 0)
                rd_varint(&r, &a.scalar);
            else if (wt == 1)
                rd_fixed64(&r, &a.scalar);
            else
                rd_skip(&r, wt);
        } else {
            rd_skip(&r, wt);
        }
    }
    return a;
}

typedef struct {
    const uint8_t *key;
    size_t klen;
    const uint8_t *value; /* the AnyValue message, NULL when the KeyValue has none */
    size_t vlen;
} Entry;

typedef struct {
    Entry *items;
    size_t n, cap;
    /* open-addressing index over items, used once a list is long */
    int32_t *slots;
    size_t nslots;
} Entries;

static void entries_free(Entries *e) {
    free(e->items);
    free(e->slots);
    memset(e, 0, sizeof *e);
}

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

#define LINEAR_LIMIT 16

static int entries_rehash(Entries *e, size_t nslots) {
    int32_t *slots = malloc(nslots * sizeof *slots);
    if (!slots) return NOMEM;
    for (size_t i = 0; i < nslots; i++) slots[i] = -1;
    for (size_t i = 0; i < e->n; i++) {
        size_t s = hash_bytes(e->items[i].key, e->items[i].klen) & (nslots - 1);
        while (slots[s] >= 0) s = (s + 1) & (nslots - 1);
        slots[s] = (int32_t)i;
    }
    free(e->slots);
    e->slots = slots;
    e->nslots = nslots;
    return OK;
}

/* Add a pair; a repeated key keeps its first position and takes the new value (a Python dict). */
static int entries_add(Entries *e, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen) {
    if (e->n < LINEAR_LIMIT && !e->slots) {
        for (size_t i = 0; i < e->n; i++)
            if (e->items[i].klen == klen && memcmp(e->items[i].key, key, klen) == 0) {
                e->items[i].value = value;
                e->items[i].vlen = vlen;
                return OK;
            }
    } else {
        if (!e->slots || e->n * 2 >= e->nslots) {
            size_t nslots = 64;
            while (nslots < e->n * 4) nslots *= 2;
            if (entries_rehash(e, nslots)) return NOMEM;
        }
        size_t s = hash_bytes(key, klen) & (e->nslots - 1);
        while (e->slots[s] >= 0) {
            Entry *it = &e->items[e->slots[s]];
            if (it->klen == klen && memcmp(it->key, key, klen) == 0) {
                it->value = value;
                it->vlen = vlen;
                return OK;
            }
            s = (s + 1) & (e->nslots - 1);
        }
        e->slots[s] = (int32_t)e->n;
    }
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 16;
        Entry *items = realloc(e->items, cap * sizeof *items);
        if (!items) return NOMEM;
        e->items = items;
        e->cap = cap;
    }
    Entry *it = &e->items[e->n++];
    it->key = key;
    it->klen = klen;
    it->value = value;
    it->vlen = vlen;
    return OK;
}

static void entries_clear(Entries *e) {
    e->n = 0;
    free(e->slots);
    e->slots = NULL;
    e->nslots = 0;
}

/* The KeyValue list under ``field`` of a message, deduplicated like a Python dict. */
static int read_pairs(const uint8_t *p, size_t n, uint32_t field, Entries *out) {
    entries_clear(out);
    Iter it = iter_of(p, n, field);
    const uint8_t *kv;
    size_t kvlen;
    while (iter_next(&it, &kv, &kvlen)) {
        const uint8_t *key, *value;
        size_t klen, vlen;
        last_bytes(kv, kvlen, 1, &key, &klen);
        if (!last_bytes(kv, kvlen, 2, &value, &vlen)) value = NULL;
        if (entries_add(out, key ? key : (const uint8_t *)"", klen, value, vlen)) return NOMEM;
    }
    return OK;
}

/* Whether an AnyValue reaches MAX_ANY_VALUE_DEPTH as flatten.common._json_form walks it:
 * every element and every pair's value (repeated keys included) one level down. */
static int too_deep(const uint8_t *p, size_t n, int depth) {
    if (depth >= MAX_ANY_VALUE_DEPTH) return 1;
    if (!p) return 0;
    Any a = any_read(p, n);
    if (a.kind != AV_ARRAY && a.kind != AV_KVLIST) return 0;
    Iter it = iter_of(a.p, a.n, 1);
    const uint8_t *item;
    size_t len;
    while (iter_next(&it, &item, &len)) {
        const uint8_t *child = item;
        size_t clen = len;
        if (a.kind == AV_KVLIST && !last_bytes(item, len, 2, &child, &clen)) child = NULL;
        if (too_deep(child, clen, depth + 1)) return 1;
    }
    return 0;
}

/* Whether an AnyValue at the top of an attribute or body is rejected for its depth. */
static int value_too_deep(const uint8_t *p, size_t n) {
    if (!p) return 0;
    Any a = any_read(p, n);
    return (a.kind == AV_ARRAY || a.kind == AV_KVLIST) && too_deep(p, n, 0);
}

/* ------------------------------------------------------------------------------------ */
/* Text forms (flatten.common.any_value_text and _json_form, byte for byte).             */

static int put_int(Buf *b, int64_t v) {
    char s[32];
    int k = snprintf(s, sizeof s, "%lld", (long long)v);
    return buf_put(b, s, (size_t)k);
}

/* The shortest decimal digits that read back as ``v`` (> 0), like Python's repr: at each length
 * the correctly rounded digits, or a neighbour of them (next to a power of two the rounding
 * interval is lopsided, and the nearest digits may miss it while the next ones hit it). */
static void shortest_digits(double v, char *digits, int *nd, int *exponent) {
    char s[64];
    uint64_t power = 1; /* 10^(precision-1) */
    for (int precision = 1; precision <= 17; precision++, power *= 10) {
        snprintf(s, sizeof s, "%.*e", precision - 1, v);
        uint64_t mantissa = 0;
        const char *q = s;
        for (; *q && *q != 'e'; q++)
            if (*q != '.') mantissa = mantissa * 10 + (uint64_t)(*q - '0');
        int e = atoi(q + 1);
        if (strtod(s, NULL) != v && precision < 17) {
            int found = 0;
            for (int delta = -1; delta <= 1 && !found; delta += 2) {
                uint64_t m = mantissa + (uint64_t)(int64_t)delta;
                int me = e;
                if (m == power * 10) {
                    m = power;
                    me = e + 1;
                }
                if (m < power) continue;
                snprintf(s, sizeof s, "%llue%d", (unsigned long long)m, me - (precision - 1));
                if (strtod(s, NULL) == v) {
                    mantissa = m;
                    e = me;
                    found = 1;
                }
            }
            if (!found) continue;
        }
        snprintf(s, sizeof s, "%llu", (unsigned long long)mantissa);
        *nd = (int)strlen(s);
        memcpy(digits, s, (size_t)*nd);
        while (*nd > 1 && digits[*nd - 1] == '0') (*nd)--;
        *exponent = e;
        return;
    }
}

/* repr(float) of a finite double: the shortest digits that read back as the same value,
 * in fixed notation unless the exponent is below -4 or above 15. */
static int put_double_repr(Buf *b, double v) {
    if (v == 0) return buf_str(b, signbit(v) ? "-0.0" : "0.0");
    char digits[32];
    int nd, exponent, negative = v < 0;
    shortest_digits(fabs(v), digits, &nd, &exponent);
    int decpt = exponent + 1;
    char out[64];
    int k = 0;
    if (negative) out[k++] = '-';
    if (decpt > 16 || decpt < -3) {
        out[k++] = digits[0];
        if (nd > 1) {
            out[k++] = '.';
            for (int i = 1; i < nd; i++) out[k++] = digits[i];
        }
        k += snprintf(out + k, sizeof out - (size_t)k, "e%c%02d", exponent < 0 ? '-' : '+', abs(exponent));
    } else if (decpt <= 0) {
        out[k++] = '0';
        out[k++] = '.';
        for (int i = 0; i < -decpt; i++) out[k++] = '0';
        for (int i = 0; i < nd; i++) out[k++] = digits[i];
    } else if (decpt >= nd) {
        for (int i = 0; i < nd; i++) out[k++] = digits[i];
        for (int i = nd; i < decpt; i++) out[k++] = '0';
        out[k++] = '.';
        out[k++] = '0';
    } else {
        for (int i = 0; i < decpt; i++) out[k++] = digits[i];
        out[k++] = '.';
        for (int i = decpt; i < nd; i++) out[k++] = digits[i];
    }
    return buf_put(b, out, (size_t)k);
}

static double as_double(uint64_t bits) {
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* double_text: NaN and infinities spelled as in OTLP/JSON. */
static int put_double_text(Buf *b, double v) {
    if (isnan(v)) return buf_str(b, "NaN");
    if (isinf(v)) return buf_str(b, v > 0 ? "Infinity" : "-Infinity");
    return put_double_repr(b, v);
}

static int put_base64(Buf *b, const uint8_t *p, size_t n) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (buf_reserve(b, (n + 2) / 3 * 4)) return NOMEM;
    uint8_t *o = b->p + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t x = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = alphabet[x >> 18];
        *o++ = alphabet[(x >> 12) & 63];
        *o++ = alphabet[(x >> 6) & 63];
        *o++ = alphabet[x & 63];
    }
    if (n - i == 1) {
        uint32_t x = (uint32_t)p[i] << 16;
        *o++ = alphabet[x >> 18];
        *o++ = alphabet[(x >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        uint32_t x = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *o++ = alphabet[x >> 18];
        *o++ = alphabet[(x >> 12) & 63];
        *o++ = alphabet[(x >> 6) & 63];
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
    return OK;
}

/* A JSON string as json.dumps(ensure_ascii=False) writes it. */
static int put_json_string(Buf *b, const uint8_t *p, size_t n) {
    if (buf_reserve(b, n + 2)) return NOMEM;
    b->p[b->len++] = '"';
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (buf_put(b, p + run, i - run)) return NOMEM;
        run = i + 1;
        char esc[8];
        const char *e = esc;
        switch (c) {
            case '"': e = "\\\""; break;
            case '\\': e = "\\\\"; break;
            case '\n': e = "\\n"; break;
            case '\r': e = "\\r"; break;
            case '\t': e = "\\t"; break;
            case '\b': e = "\\b"; break;
            case '\f': e = "\\f"; break;
            default: snprintf(esc, sizeof esc, "\\u%04x", c);
        }
        if (buf_str(b, e)) return NOMEM;
    }
    if (buf_put(b, p + run, n - run) || buf_put(b, "\"", 1)) return NOMEM;
    return OK;
}

static int put_json(Buf *b, const uint8_t *p, size_t n);

static int put_json_any(Buf *b, Any a) {
    switch (a.kind) {
        case AV_NONE: return buf_str(b, "null");
        case AV_STRING: return put_json_string(b, a.p, a.n);
        case AV_BOOL: return buf_str(b, a.scalar ? "true" : "false");
        case AV_INT: return put_int(b, (int64_t)a.scalar);
        case AV_DOUBLE: {
            double d = as_double(a.scalar);
            if (isfinite(d)) return put_double_repr(b, d);
            if (buf_put(b, "\"", 1) || put_double_text(b, d) || buf_put(b, "\"", 1)) return NOMEM;
            return OK;
        }
        case AV_BYTES:
            if (buf_put(b, "\"", 1) || put_base64(b, a.p, a.n) || buf_put(b, "\"", 1)) return NOMEM;
            return OK;
        case AV_ARRAY: {
            if (buf_put(b, "[", 1)) return NOMEM;
            Iter it = iter_of(a.p, a.n, 1);
            const uint8_t *item;
            size_t len;
            int first = 1;
            while (iter_next(&it, &item, &len)) {
                if (!first && buf_put(b, ",", 1)) return NOMEM;
                first = 0;
                if (put_json(b, item, len)) return NOMEM;
            }
            return buf_put(b, "]", 1) ? NOMEM : OK;
        }
        case AV_KVLIST: {
            Entries pairs = {0};
            int status = read_pairs(a.p, a.n, 1, &pairs);
            if (!status) status = buf_put(b, "{", 1) ? NOMEM : OK;
            for (size_t i = 0; !status && i < pairs.n; i++) {
                if (i && buf_put(b, ",", 1)) status = NOMEM;
                if (!status) status = put_json_string(b, pairs.items[i].key, pairs.items[i].klen);
                if (!status && buf_put(b, ":", 1)) status = NOMEM;
                if (!status) status = put_json(b, pairs.items[i].value, pairs.items[i].vlen);
            }
            if (!status && buf_put(b, "}", 1)) status = NOMEM;
            entries_free(&pairs);
            return status;
        }
    }
    return OK;
}

static int put_json(Buf *b, const uint8_t *p, size_t n) {
    if (!p) return buf_str(b, "null");
    return put_json_any(b, any_read(p, n));
}

/* any_value_text into ``b``; *is_null when the value has no text (NULL). */
static int put_text(Buf *b, const uint8_t *p, size_t n, int *is_null) {
    *is_null = 0;
    if (!p) {
        *is_null = 1;
        return OK;
    }
    Any a = any_read(p, n);
    switch (a.kind) {
        case AV_NONE: *is_null = 1; return OK;
        case AV_STRING: return buf_put(b, a.p, a.n) ? NOMEM : OK;
        case AV_BOOL: return buf_str(b, a.scalar ? "true" : "false") ? NOMEM : OK;
        case AV_INT: return put_int(b, (int64_t)a.scalar) ? NOMEM : OK;
        case AV_DOUBLE: return put_double_text(b, as_double(a.scalar)) ? NOMEM : OK;
        case AV_BYTES: return put_base64(b, a.p, a.n);
        default: return put_json_any(b, a);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Arrow column builders.                                                                */

typedef struct {
    Buf validity, offsets, data;
    int64_t n, nulls;
} StrCol; /* Arrow utf8: validity bitmap, int32 offsets, bytes */

typedef struct {
    Buf data;
    int64_t n;
} FixedCol; /* int64 or int32 values, never NULL here */

typedef struct {
    Buf offsets;
    StrCol keys, values;
    int64_t n;
} MapCol; /* map<string, string> */

static int set_valid(StrCol *c, int valid) {
    size_t need = (size_t)(c->n / 8 + 1);
    if (c->validity.len < need) {
        size_t old = c->validity.len;
        if (buf_reserve(&c->validity, need - old)) return NOMEM;
        memset(c->validity.p + old, 0, need - old);
        c->validity.len = need;
    }
    uint8_t bit = (uint8_t)(1u << (c->n % 8));
    if (valid)
        c->validity.p[c->n / 8] |= bit;
    else
        c->validity.p[c->n / 8] &= (uint8_t)~bit;
    return OK;
}

static int str_end(StrCol *c, int valid) {
    /* Ends a value whose bytes are already in c->data. */
    if (c->data.len > (size_t)INT32_LIMIT) return UNDECIDED; /* past Arrow's utf8 offsets */
    if (c->offsets.len == 0) {
        int32_t zero = 0;
        if (buf_put(&c->offsets, &zero, 4)) return NOMEM;
    }
    int32_t end = (int32_t)c->data.len;
    if (set_valid(c, valid) || buf_put(&c->offsets, &end, 4)) return NOMEM;
    if (!valid) c->nulls++;
    c->n++;
    return OK;
}

static int str_append(StrCol *c, const uint8_t *p, size_t n) {
    if (buf_put(&c->data, p, n)) return NOMEM;
    return str_end(c, 1);
}

static int str_null(StrCol *c) { return str_end(c, 0); }

/* A proto3 string column: empty means NULL. */
static int str_text(StrCol *c, const uint8_t *p, size_t n) { return n ? str_append(c, p, n) : str_null(c); }

static int fixed_append(FixedCol *c, const void *v, size_t size) {
    if (buf_put(&c->data, v, size)) return NOMEM;
    c->n++;
    return OK;
}

static int i32_append(FixedCol *c, uint32_t bits) {
    int32_t v = (int32_t)bits; /* int32_bits: the uint32's bit pattern */
    return fixed_append(c, &v, 4);
}

static int map_end_row(MapCol *m) {
    if (m->offsets.len == 0) {
        int32_t zero = 0;
        if (buf_put(&m->offsets, &zero, 4)) return NOMEM;
    }
    if (m->keys.n > INT32_LIMIT) return UNDECIDED;
    int32_t end = (int32_t)m->keys.n;
    if (buf_put(&m->offsets, &end, 4)) return NOMEM;
    m->n++;
    return OK;
}

static void str_free(StrCol *c) {
    buf_free(&c->validity);
    buf_free(&c->offsets);
    buf_free(&c->data);
}

static void map_free(MapCol *m) {
    buf_free(&m->offsets);
    str_free(&m->keys);
    str_free(&m->values);
}

/* Attributes as a map row: every pair's text, then one row of the map column. */
static int map_append_pairs(MapCol *m, const Entries *pairs) {
    for (size_t i = 0; i < pairs->n; i++) {
        const Entry *e = &pairs->items[i];
        int status = str_append(&m->keys, e->key, e->klen);
        if (status) return status;
        int is_null;
        if (put_text(&m->values.data, e->value, e->vlen, &is_null)) return NOMEM;
        status = str_end(&m->values, !is_null);
        if (status) return status;
    }
    return map_end_row(m);
}

/* ------------------------------------------------------------------------------------ */
/* Resource and scope: read once, copied into every row under them.                      */

typedef struct {
    const uint8_t *p; /* the Resource message (NULL: absent) */
    size_t n;
    Entries attributes;
    uint32_t dropped;
    int too_deep;
} ResourceValue;

typedef struct {
    const uint8_t *p;
    size_t n;
    const uint8_t *name, *version;
    size_t name_len, version_len;
    Entries attributes;
    uint32_t dropped;
    int too_deep;
} ScopeValue;

static uint64_t last_varint(const uint8_t *p, size_t n, uint32_t field) {
    if (!p) p = NOTHING, n = 0;
    Rd r = {p, p + n};
    uint64_t value = 0;
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        rd_tag(&r, &f, &wt);
        if (f == field && wt == 0)
            rd_varint(&r, &value);
        else
            rd_skip(&r, wt);
    }
    return value;
}

static int pairs_too_deep(const Entries *pairs_unused, const uint8_t *p, size_t n, uint32_t field) {
    /* Every pair counts, repeated keys included: the Python dict evaluates them all. */
    (void)pairs_unused;
    Iter it = iter_of(p, n, field);
    const uint8_t *kv, *value;
    size_t kvlen, vlen;
    while (iter_next(&it, &kv, &kvlen))
        if (last_bytes(kv, kvlen, 2, &value, &vlen) && value_too_deep(value, vlen)) return 1;
    return 0;
}

static int resource_read(ResourceValue *rv, const uint8_t *p, size_t n) {
    rv->p = p;
    rv->n = n;
    int status = read_pairs(p, n, 1, &rv->attributes);
    rv->dropped = (uint32_t)last_varint(p, n, 2);
    rv->too_deep = pairs_too_deep(&rv->attributes, p, n, 1);
    return status;
}

static int scope_read(ScopeValue *sv, const uint8_t *p, size_t n) {
    sv->p = p;
    sv->n = n;
    last_bytes(p, n, 1, &sv->name, &sv->name_len);
    last_bytes(p, n, 2, &sv->version, &sv->version_len);
    int status = read_pairs(p, n, 3, &sv->attributes);
    sv->dropped = (uint32_t)last_varint(p, n, 4);
    sv->too_deep = pairs_too_deep(&sv->attributes, p, n, 3);
    return status;
}

/* ------------------------------------------------------------------------------------ */
/* The logs table.                                                                       */

typedef struct {
    StrCol event_name, trace_id, span_id;
    FixedCol time_unix_nano, observed_time_unix_nano;
    StrCol severity_number, severity_text, body;
    MapCol attributes;
    FixedCol dropped_attributes_count, flags;
    MapCol resource_attributes;
    FixedCol resource_dropped;
    StrCol resource_schema_url;
    StrCol scope_name, scope_version;
    MapCol scope_attributes;
    FixedCol scope_dropped;
    StrCol log_schema_url;
    int64_t rows;
    int64_t rejected;
    char first_error[200];
    int64_t max_output;
} Logs;

static char SEVERITY_NAMES[32][40]; /* set by configure(); "" where the enum has no name */

static void logs_free(Logs *t) {
    StrCol *strs[] = {&t->event_name,  &t->trace_id,           &t->span_id,    &t->severity_number,
                      &t->severity_text, &t->body,              &t->resource_schema_url, &t->scope_name,
                      &t->scope_version, &t->log_schema_url};
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) str_free(strs[i]);
    FixedCol *fixed[] = {&t->time_unix_nano, &t->observed_time_unix_nano, &t->dropped_attributes_count,
                         &t->flags, &t->resource_dropped, &t->scope_dropped};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) buf_free(&fixed[i]->data);
    map_free(&t->attributes);
    map_free(&t->resource_attributes);
    map_free(&t->scope_attributes);
}

static size_t strcol_bytes(const StrCol *c) { return c->data.len + c->offsets.len + c->validity.len; }
static size_t map_bytes(const MapCol *m) { return m->offsets.len + strcol_bytes(&m->keys) + strcol_bytes(&m->values); }

static size_t logs_bytes(const Logs *t) {
    return strcol_bytes(&t->event_name) + strcol_bytes(&t->trace_id) + strcol_bytes(&t->span_id) +
           strcol_bytes(&t->severity_number) + strcol_bytes(&t->severity_text) + strcol_bytes(&t->body) +
           strcol_bytes(&t->resource_schema_url) + strcol_bytes(&t->scope_name) + strcol_bytes(&t->scope_version) +
           strcol_bytes(&t->log_schema_url) + map_bytes(&t->attributes) + map_bytes(&t->resource_attributes) +
           map_bytes(&t->scope_attributes) + (size_t)t->rows * 32;
}

static void reject(Logs *t, int64_t index, const char *reason) {
    if (!t->rejected) snprintf(t->first_error, sizeof t->first_error, "log record %lld: %s", (long long)index, reason);
    t->rejected++;
}

static int put_hex(StrCol *c, const uint8_t *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    if (buf_reserve(&c->data, 2 * n)) return NOMEM;
    for (size_t i = 0; i < n; i++) {
        c->data.p[c->data.len++] = (uint8_t)digits[p[i] >> 4];
        c->data.p[c->data.len++] = (uint8_t)digits[p[i] & 15];
    }
    return str_end(c, 1);
}

static int put_enum(StrCol *c, char names[][40], int count, int32_t number) {
    if (number >= 0 && number < count && names[number][0])
        return str_append(c, (const uint8_t *)names[number], strlen(names[number]));
    char s[16];
    int k = snprintf(s, sizeof s, "%d", number);
    return str_append(c, (const uint8_t *)s, (size_t)k);
}

typedef struct {
    uint64_t time, observed;
    int32_t severity;
    uint32_t dropped, flags;
    const uint8_t *severity_text, *body, *trace_id, *span_id, *event_name;
    size_t severity_text_len, body_len, trace_id_len, span_id_len, event_name_len;
} LogFields;

static LogFields log_fields(const uint8_t *p, size_t n) {
    LogFields f;
    memset(&f, 0, sizeof f);
    if (!p) p = NOTHING, n = 0;
    Rd r = {p, p + n};
    while (r.p < r.end) {
        uint32_t field;
        int wt;
        uint64_t v = 0;
        uint32_t v32 = 0;
        rd_tag(&r, &field, &wt);
        switch (field) {
            case 1: rd_fixed64(&r, &f.time); break;
            case 2: rd_varint(&r, &v); f.severity = (int32_t)v; break;
            case 3: rd_bytes(&r, &f.severity_text, &f.severity_text_len); break;
            case 5: rd_bytes(&r, &f.body, &f.body_len); break;
            case 7: rd_varint(&r, &v); f.dropped = (uint32_t)v; break;
            case 8: rd_fixed32(&r, &v32); f.flags = v32; break;
            case 9: rd_bytes(&r, &f.trace_id, &f.trace_id_len); break;
            case 10: rd_bytes(&r, &f.span_id, &f.span_id_len); break;
            case 11: rd_fixed64(&r, &f.observed); break;
            case 12: rd_bytes(&r, &f.event_name, &f.event_name_len); break;
            default: rd_skip(&r, wt);
        }
    }
    return f;
}

/* Checks in the order flatten.logs._log_row computes the values: the first failure is the reason. */
static const char *log_rejection(const LogFields *f, const uint8_t *p, size_t n, char *reason, size_t size) {
    if (f->trace_id_len && f->trace_id_len != 16) {
        snprintf(reason, size, "trace_id must be 16 bytes, got %zu", f->trace_id_len);
        return reason;
    }
    if (f->span_id_len && f->span_id_len != 8) {
        snprintf(reason, size, "span_id must be 8 bytes, got %zu", f->span_id_len);
        return reason;
    }
    if (f->time > (uint64_t)INT64_MAX) {
        snprintf(reason, size, "time_unix_nano %llu is above 2^63-1", (unsigned long long)f->time);
        return reason;
    }
    if (f->observed > (uint64_t)INT64_MAX) {
        snprintf(reason, size, "observed_time_unix_nano %llu is above 2^63-1", (unsigned long long)f->observed);
        return reason;
    }
    if (value_too_deep(f->body, f->body_len) || pairs_too_deep(NULL, p, n, 6)) {
        snprintf(reason, size, "an attribute or body nests deeper than %d levels", MAX_ANY_VALUE_DEPTH);
        return reason;
    }
    return NULL;
}

static int log_row(Logs *t, const LogFields *f, Entries *pairs, const uint8_t *p, size_t n, const ResourceValue *rv,
                   const uint8_t *rurl, size_t rurl_len, const ScopeValue *sv, const uint8_t *surl, size_t surl_len) {
    int s;
    int64_t time = (int64_t)f->time, observed = (int64_t)f->observed;
    if ((s = str_text(&t->event_name, f->event_name, f->event_name_len))) return s;
    if ((s = f->trace_id_len ? put_hex(&t->trace_id, f->trace_id, 16) : str_null(&t->trace_id))) return s;
    if ((s = f->span_id_len ? put_hex(&t->span_id, f->span_id, 8) : str_null(&t->span_id))) return s;
    if ((s = fixed_append(&t->time_unix_nano, &time, 8))) return s;
    if ((s = fixed_append(&t->observed_time_unix_nano, &observed, 8))) return s;
    if ((s = put_enum(&t->severity_number, SEVERITY_NAMES, 32, f->severity))) return s;
    if ((s = str_text(&t->severity_text, f->severity_text, f->severity_text_len))) return s;
    int is_null;
    if (put_text(&t->body.data, f->body, f->body_len, &is_null)) return NOMEM;
    if ((s = str_end(&t->body, !is_null))) return s;
    if ((s = read_pairs(p, n, 6, pairs))) return s;
    if ((s = map_append_pairs(&t->attributes, pairs))) return s;
    if ((s = i32_append(&t->dropped_attributes_count, f->dropped))) return s;
    if ((s = i32_append(&t->flags, f->flags))) return s;
    if ((s = map_append_pairs(&t->resource_attributes, &rv->attributes))) return s;
    if ((s = i32_append(&t->resource_dropped, rv->dropped))) return s;
    if ((s = str_text(&t->resource_schema_url, rurl, rurl_len))) return s;
    if ((s = str_text(&t->scope_name, sv->name, sv->name_len))) return s;
    if ((s = str_text(&t->scope_version, sv->version, sv->version_len))) return s;
    if ((s = map_append_pairs(&t->scope_attributes, &sv->attributes))) return s;
    if ((s = i32_append(&t->scope_dropped, sv->dropped))) return s;
    if ((s = str_text(&t->log_schema_url, surl, surl_len))) return s;
    t->rows++;
    return OK;
}

static int decode_logs_body(Logs *t, const uint8_t *body, size_t size) {
    int status = check_message(&LOGS_REQUEST, body, size, 0);
    if (status) return status;
    ResourceValue rv;
    ScopeValue sv;
    Entries pairs = {0};
    memset(&rv, 0, sizeof rv);
    memset(&sv, 0, sizeof sv);
    int64_t index = 0;
    Iter resources = iter_of(body, size, 1);
    const uint8_t *rl, *sl, *record;
    size_t rl_len, sl_len, record_len;
    while (!status && iter_next(&resources, &rl, &rl_len)) {
        const uint8_t *res, *rurl;
        size_t res_len, rurl_len;
        last_bytes(rl, rl_len, 1, &res, &res_len);
        last_bytes(rl, rl_len, 3, &rurl, &rurl_len);
        if ((status = resource_read(&rv, res, res_len))) break;
        Iter scopes = iter_of(rl, rl_len, 2);
        while (!status && iter_next(&scopes, &sl, &sl_len)) {
            const uint8_t *scope, *surl;
            size_t scope_len, surl_len;
            last_bytes(sl, sl_len, 1, &scope, &scope_len);
            last_bytes(sl, sl_len, 3, &surl, &surl_len);
            if ((status = scope_read(&sv, scope, scope_len))) break;
            int context_too_deep = sv.too_deep || rv.too_deep;
            Iter records = iter_of(sl, sl_len, 2);
            while (!status && iter_next(&records, &record, &record_len)) {
                index++;
                char reason[128];
                if (context_too_deep) {
                    snprintf(reason, sizeof reason, "an attribute or body nests deeper than %d levels",
                             MAX_ANY_VALUE_DEPTH);
                    reject(t, index, reason);
                    continue;
                }
                LogFields f = log_fields(record, record_len);
                if (log_rejection(&f, record, record_len, reason, sizeof reason)) {
                    reject(t, index, reason);
                    continue;
                }
                status = log_row(t, &f, &pairs, record, record_len, &rv, rurl, rurl_len, &sv, surl, surl_len);
                if (!status && t->max_output >= 0 && logs_bytes(t) > (size_t)t->max_output) status = UNDECIDED;
            }
        }
    }
    entries_free(&pairs);
    entries_free(&rv.attributes);
    entries_free(&sv.attributes);
    return status;
}

#ifdef OTEL_NATIVE_FUZZ
/* libFuzzer entry (fuzz/run.py builds it with AddressSanitizer and UndefinedBehaviorSanitizer). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int configured = 0;
    if (!configured) {
        strcpy(SEVERITY_NAMES[0], "SEVERITY_NUMBER_UNSPECIFIED");
        strcpy(SEVERITY_NAMES[9], "SEVERITY_NUMBER_INFO");
        configured = 1;
    }
    Logs *t = calloc(1, sizeof *t);
    if (!t) return 0;
    t->max_output = 64 << 20;
    decode_logs_body(t, data, size);
    logs_free(t);
    free(t);
    return 0;
}
#else

/* ------------------------------------------------------------------------------------ */
/* Python: handing the buffers over.                                                     */

/* The Arrow C data interface (https://arrow.apache.org/docs/format/CDataInterface.html): the
 * batch is one struct array whose children point into the builders' buffers, which the
 * release callback frees once Arrow is done with them. No copy. */
struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

#define MAX_NODES 64

typedef struct {
    Logs *t;
    struct ArrowArray nodes[MAX_NODES];
    const void *buffers[MAX_NODES * 3];
    struct ArrowArray *children[MAX_NODES];
    int nodes_used, buffers_used, children_used;
} Export;

static void child_release(struct ArrowArray *array) { array->release = NULL; }

static void export_release(struct ArrowArray *array) {
    Export *e = array->private_data;
    logs_free(e->t);
    free(e->t);
    free(e);
    array->release = NULL;
}

static struct ArrowArray *node(Export *e, int64_t length, int64_t nulls, int n_buffers, int n_children) {
    struct ArrowArray *a = &e->nodes[e->nodes_used++];
    memset(a, 0, sizeof *a);
    a->length = length;
    a->null_count = nulls;
    a->n_buffers = n_buffers;
    a->n_children = n_children;
    a->buffers = &e->buffers[e->buffers_used];
    e->buffers_used += n_buffers;
    for (int i = 0; i < n_buffers; i++) a->buffers[i] = NULL;
    a->children = n_children ? &e->children[e->children_used] : NULL;
    e->children_used += n_children;
    a->release = child_release;
    return a;
}

static const void *data_of(Buf *b) { return buf_reserve(b, 1) ? NULL : b->p; }

static struct ArrowArray *export_str(Export *e, StrCol *c) {
    if (c->offsets.len == 0) {
        int32_t zero = 0;
        if (buf_put(&c->offsets, &zero, 4)) return NULL;
    }
    struct ArrowArray *a = node(e, c->n, c->nulls, 3, 0);
    a->buffers[0] = c->nulls ? data_of(&c->validity) : NULL;
    a->buffers[1] = data_of(&c->offsets);
    a->buffers[2] = data_of(&c->data);
    return a->buffers[1] && a->buffers[2] ? a : NULL;
}

static struct ArrowArray *export_fixed(Export *e, FixedCol *c) {
    struct ArrowArray *a = node(e, c->n, 0, 2, 0);
    a->buffers[1] = data_of(&c->data);
    return a->buffers[1] ? a : NULL;
}

static struct ArrowArray *export_map(Export *e, MapCol *m) {
    if (m->offsets.len == 0) {
        int32_t zero = 0;
        if (buf_put(&m->offsets, &zero, 4)) return NULL;
    }
    struct ArrowArray *a = node(e, m->n, 0, 2, 1);
    a->buffers[1] = data_of(&m->offsets);
    struct ArrowArray *entries = node(e, m->keys.n, 0, 1, 2);
    entries->children[0] = export_str(e, &m->keys);
    entries->children[1] = export_str(e, &m->values);
    a->children[0] = entries;
    return a->buffers[1] && entries->children[0] && entries->children[1] ? a : NULL;
}

/* The batch as a struct array in the order of the logs schema; NULL when out of memory. */
static struct ArrowArray *export_logs(Export *e) {
    Logs *t = e->t;
    struct ArrowArray *top = node(e, t->rows, 0, 1, 15);
    struct ArrowArray **c = top->children;
    c[0] = export_str(e, &t->event_name);
    c[1] = export_str(e, &t->trace_id);
    c[2] = export_str(e, &t->span_id);
    c[3] = export_fixed(e, &t->time_unix_nano);
    c[4] = export_fixed(e, &t->observed_time_unix_nano);
    c[5] = export_str(e, &t->severity_number);
    c[6] = export_str(e, &t->severity_text);
    c[7] = export_str(e, &t->body);
    c[8] = export_map(e, &t->attributes);
    c[9] = export_fixed(e, &t->dropped_attributes_count);
    c[10] = export_fixed(e, &t->flags);
    struct ArrowArray *resource = node(e, t->rows, 0, 1, 2);
    resource->children[0] = export_map(e, &t->resource_attributes);
    resource->children[1] = export_fixed(e, &t->resource_dropped);
    c[11] = resource;
    c[12] = export_str(e, &t->resource_schema_url);
    struct ArrowArray *scope = node(e, t->rows, 0, 1, 4);
    scope->children[0] = export_str(e, &t->scope_name);
    scope->children[1] = export_str(e, &t->scope_version);
    scope->children[2] = export_map(e, &t->scope_attributes);
    scope->children[3] = export_fixed(e, &t->scope_dropped);
    c[13] = scope;
    c[14] = export_str(e, &t->log_schema_url);
    for (int i = 0; i < 15; i++)
        if (!c[i]) return NULL;
    for (int i = 0; i < 2; i++)
        if (!resource->children[i]) return NULL;
    for (int i = 0; i < 4; i++)
        if (!scope->children[i]) return NULL;
    top->release = export_release;
    top->private_data = e;
    return top;
}

static PyObject *py_decode_logs(PyObject *self, PyObject *args) {
    Py_buffer body;
    long long max_output;
    if (!PyArg_ParseTuple(args, "y*L", &body, &max_output)) return NULL;
    Logs *t = calloc(1, sizeof *t);
    if (!t) {
        PyBuffer_Release(&body);
        return PyErr_NoMemory();
    }
    t->max_output = max_output;
    int status;
    Py_BEGIN_ALLOW_THREADS status = decode_logs_body(t, (const uint8_t *)body.buf, (size_t)body.len);
    Py_END_ALLOW_THREADS PyBuffer_Release(&body);
    if (status == NOMEM) {
        logs_free(t);
        free(t);
        return PyErr_NoMemory();
    }
    if (status != OK) {
        logs_free(t);
        free(t);
        Py_RETURN_NONE;
    }
    Export *e = calloc(1, sizeof *e);
    struct ArrowArray *batch = NULL;
    if (e) {
        e->t = t;
        batch = export_logs(e);
    }
    if (!batch) {
        free(e);
        logs_free(t);
        free(t);
        return PyErr_NoMemory();
    }
    PyObject *first = t->rejected ? PyUnicode_FromString(t->first_error) : (Py_INCREF(Py_None), Py_None);
    /* Arrow takes the array over (its release frees everything) once imported. */
    return Py_BuildValue("(LLNNL)", (long long)t->rows, (long long)t->rejected, first, PyLong_FromVoidPtr(batch),
                         (long long)logs_bytes(t));
}

static PyObject *py_configure(PyObject *self, PyObject *args) {
    PyObject *names;
    if (!PyArg_ParseTuple(args, "O!", &PyDict_Type, &names)) return NULL;
    memset(SEVERITY_NAMES, 0, sizeof SEVERITY_NAMES);
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(names, &pos, &key, &value)) {
        long number = PyLong_AsLong(key);
        if (number == -1 && PyErr_Occurred()) return NULL;
        const char *name = PyUnicode_AsUTF8(value);
        if (!name) return NULL;
        if (number < 0 || number >= 32 || strlen(name) >= sizeof SEVERITY_NAMES[0]) {
            PyErr_SetString(PyExc_ValueError, "severity number or name out of range");
            return NULL;
        }
        strcpy(SEVERITY_NAMES[number], name);
    }
    Py_RETURN_NONE;
}

static PyObject *py_known_fields(PyObject *self, PyObject *unused) {
    PyObject *result = PyDict_New();
    if (!result) return NULL;
    for (size_t i = 0; i < sizeof ALL_SPECS / sizeof *ALL_SPECS; i++) {
        const MsgSpec *spec = ALL_SPECS[i];
        PyObject *numbers = PyList_New(spec->nfields);
        if (!numbers) goto fail;
        for (int k = 0; k < spec->nfields; k++) PyList_SET_ITEM(numbers, k, PyLong_FromUnsignedLong(spec->fields[k].num));
        if (PyDict_SetItemString(result, spec->name, numbers)) {
            Py_DECREF(numbers);
            goto fail;
        }
        Py_DECREF(numbers);
    }
    return result;
fail:
    Py_DECREF(result);
    return NULL;
}

static PyMethodDef METHODS[] = {
    {"decode_logs", py_decode_logs, METH_VARARGS,
     "decode_logs(body, max_output_bytes) -> (rows, rejected, first_error, columns, bytes) or None (undecided)"},
    {"configure", py_configure, METH_VARARGS, "configure(severity_names: dict[int, str])"},
    {"known_fields", py_known_fields, METH_NOARGS, "Field numbers each message shape knows, by message name."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_native", "The compiled OTLP decoder.", -1, METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&MODULE); }
#endif /* OTEL_NATIVE_FUZZ */
