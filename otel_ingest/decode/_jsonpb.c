/* OTLP/JSON → protobuf wire bytes, with the GIL released (docs/decoder.md, "OTLP/JSON").
 *
 * The bytes it writes parse into exactly the message that otel_ingest/otlp_json.parse (json.loads
 * with duplicate keys refused, hex ids rewritten, json_format.ParseDict with unknown fields
 * ignored) would build; the compiled decoder (_native.c) or protobuf then reads them. It is
 * driven by a table of the OTLP messages made from the installed protobuf descriptors
 * (otel_ingest/decode/jsonpb.py sends it to configure()), so field names, numbers and types are
 * protobuf's own.
 *
 * Whatever it is not sure to read exactly as that path would, it refuses to decide: transcode()
 * returns None and the caller runs the Python path, which answers (a 400 with its message for an
 * invalid body). That covers every invalid body, and also valid ones read in ways not copied here:
 * escapes in object keys, a field given twice (both spellings), a null that would clear a field
 * already set, numbers with fractions or exponents in integer fields, int64 strings other than
 * -?[0-9]+, ids with escapes or spaces, a message given as anything but an object, messages nested
 * deeper than MAX_MESSAGE_DEPTH or JSON deeper than MAX_JSON_DEPTH, NaN/Infinity literals, lone
 * surrogates, numbers longer than MAX_NUMBER.
 */
#ifndef OTEL_JSONPB_FUZZ /* fuzz/: the same code without Python, driven by libFuzzer */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MESSAGE_DEPTH 90 /* json_format refuses past 100 */
#define MAX_JSON_DEPTH 200   /* json.loads and the id rewrite recurse in Python */
#define MAX_NUMBER 400       /* characters in a number token */
#define MAX_UNKNOWN_KEYS 32  /* per object: duplicates among them are looked for pairwise */

/* FieldDescriptor.TYPE_* */
enum {
    T_DOUBLE = 1, T_FLOAT, T_INT64, T_UINT64, T_INT32, T_FIXED64, T_FIXED32, T_BOOL, T_STRING, T_GROUP,
    T_MESSAGE, T_BYTES, T_UINT32, T_ENUM, T_SFIXED32, T_SFIXED64, T_SINT32, T_SINT64
};
enum { F_REPEATED = 1, F_ID = 2, F_UNSUPPORTED = 4 };

typedef struct {
    const uint8_t *name;
    uint32_t len;
    int32_t number;
} EnumValue;
typedef struct {
    uint32_t n;
    EnumValue *values;
} EnumSpec;
typedef struct {
    uint32_t number, type, flags;
    int32_t oneof, sub; /* oneof index in the message (-1: none); message or enum index (-1) */
    const uint8_t *json, *name;
    uint32_t jlen, nlen;
} Field;
typedef struct {
    uint32_t n;
    Field *fields;
} MsgSpec;

typedef struct {
    uint8_t *blob;
    uint32_t n_enums, n_messages;
    EnumSpec *enums;
    MsgSpec *messages;
} Schema;

static Schema SCHEMA;

static void schema_free(Schema *s) {
    if (s->enums)
        for (uint32_t i = 0; i < s->n_enums; i++) free(s->enums[i].values);
    if (s->messages)
        for (uint32_t i = 0; i < s->n_messages; i++) free(s->messages[i].fields);
    free(s->enums);
    free(s->messages);
    free(s->blob);
    memset(s, 0, sizeof *s);
}

/* The table jsonpb.py writes: little-endian u32 counts, numbers and lengths, then bytes. */
typedef struct {
    const uint8_t *p, *end;
    int bad;
} Blob;

static uint32_t blob_u32(Blob *b) {
    if (b->end - b->p < 4) {
        b->bad = 1;
        return 0;
    }
    uint32_t v = (uint32_t)b->p[0] | (uint32_t)b->p[1] << 8 | (uint32_t)b->p[2] << 16 | (uint32_t)b->p[3] << 24;
    b->p += 4;
    return v;
}

static const uint8_t *blob_bytes(Blob *b, uint32_t *len) {
    *len = blob_u32(b);
    if (b->bad || (size_t)(b->end - b->p) < *len) {
        b->bad = 1;
        *len = 0;
        return NULL;
    }
    const uint8_t *p = b->p;
    b->p += *len;
    return p;
}

/* 0 when the table was read; the previous one is replaced. */
static int schema_load(const uint8_t *data, size_t size) {
    Schema s = {0};
    s.blob = malloc(size ? size : 1);
    if (!s.blob) return -1;
    memcpy(s.blob, data, size);
    Blob b = {s.blob, s.blob + size, 0};
    s.n_enums = blob_u32(&b);
    if (b.bad || s.n_enums > 1000 || !(s.enums = calloc(s.n_enums + 1, sizeof *s.enums))) goto fail;
    for (uint32_t i = 0; i < s.n_enums; i++) {
        EnumSpec *e = &s.enums[i];
        e->n = blob_u32(&b);
        if (b.bad || e->n > 10000 || !(e->values = calloc(e->n + 1, sizeof *e->values))) goto fail;
        for (uint32_t k = 0; k < e->n; k++) {
            e->values[k].name = blob_bytes(&b, &e->values[k].len);
            e->values[k].number = (int32_t)blob_u32(&b);
        }
    }
    s.n_messages = blob_u32(&b);
    if (b.bad || s.n_messages > 1000 || !(s.messages = calloc(s.n_messages + 1, sizeof *s.messages))) goto fail;
    for (uint32_t i = 0; i < s.n_messages; i++) {
        MsgSpec *m = &s.messages[i];
        m->n = blob_u32(&b);
        if (b.bad || m->n > 64 || !(m->fields = calloc(m->n + 1, sizeof *m->fields))) goto fail;
        for (uint32_t k = 0; k < m->n; k++) {
            Field *f = &m->fields[k];
            f->number = blob_u32(&b);
            f->type = blob_u32(&b);
            f->flags = blob_u32(&b);
            f->oneof = (int32_t)blob_u32(&b);
            f->sub = (int32_t)blob_u32(&b);
            f->json = blob_bytes(&b, &f->jlen);
            f->name = blob_bytes(&b, &f->nlen);
            if (f->number == 0 || f->number > 0x1fffffff || f->oneof >= 64) f->flags |= F_UNSUPPORTED;
            if (f->type == T_MESSAGE && (f->sub < 0 || (uint32_t)f->sub >= s.n_messages)) f->flags |= F_UNSUPPORTED;
            if (f->type == T_ENUM && (f->sub < 0 || (uint32_t)f->sub >= s.n_enums)) f->flags |= F_UNSUPPORTED;
            if (f->type == T_GROUP || f->type == T_FLOAT || f->type < T_DOUBLE || f->type > T_SINT64)
                f->flags |= F_UNSUPPORTED;
        }
    }
    if (b.bad || b.p != b.end) goto fail;
    schema_free(&SCHEMA);
    SCHEMA = s;
    return 0;
fail:
    schema_free(&s);
    return -1;
}

/* ------------------------------------------------------------------------------------ */
/* Output.                                                                                */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} Out;

static int out_reserve(Out *o, size_t extra) {
    if (o->len + extra <= o->cap) return 0;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + extra) cap *= 2;
    uint8_t *p = realloc(o->p, cap);
    if (!p) return -1;
    o->p = p;
    o->cap = cap;
    return 0;
}

static inline int varint_size(uint64_t v) {
    int n = 1;
    while (v >= 0x80) v >>= 7, n++;
    return n;
}

static inline uint8_t *varint_write(uint8_t *q, uint64_t v) {
    while (v >= 0x80) {
        *q++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *q++ = (uint8_t)v;
    return q;
}

static int put_varint(Out *o, uint64_t v) {
    if (out_reserve(o, 10)) return -1;
    o->len = (size_t)(varint_write(o->p + o->len, v) - o->p);
    return 0;
}

static int put_tag(Out *o, uint32_t number, int wire_type) { return put_varint(o, (uint64_t)number << 3 | (uint32_t)wire_type); }

static int put_fixed(Out *o, uint64_t v, int size) {
    if (out_reserve(o, 8)) return -1;
    for (int i = 0; i < size; i++) o->p[o->len++] = (uint8_t)(v >> (8 * i));
    return 0;
}

/* A length-delimited value whose length is not known yet: 5 bytes held, then closed. */
static int open_len(Out *o, size_t *start) {
    if (out_reserve(o, 5)) return -1;
    *start = o->len;
    o->len += 5;
    return 0;
}

static int close_len(Out *o, size_t start) {
    size_t len = o->len - start - 5;
    if (len > 0x7fffffffu) return -1; /* protobuf's 2 GiB limit */
    uint8_t head[5];
    int k = (int)(varint_write(head, len) - head);
    if (k < 5) memmove(o->p + start + k, o->p + start + 5, len);
    memcpy(o->p + start, head, (size_t)k);
    o->len = start + (size_t)k + len;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* JSON reading. Every function returns 0, or -1 for "not decided here".                 */

typedef struct {
    const uint8_t *p, *end;
    Out out;
    int depth; /* JSON nesting */
} P;

static inline void ws(P *x) {
    while (x->p < x->end && (*x->p == ' ' || *x->p == '\n' || *x->p == '\r' || *x->p == '\t')) x->p++;
}

static inline int expect(P *x, uint8_t c) {
    ws(x);
    if (x->p >= x->end || *x->p != c) return -1;
    x->p++;
    return 0;
}

static int hex4(const uint8_t *s, uint32_t *v) {
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = s[i];
        r <<= 4;
        if (c >= '0' && c <= '9')
            r |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            r |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            r |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *v = r;
    return 0;
}

/* A string token: its raw text between the quotes, and whether it holds escapes. Refused:
 * control characters, invalid UTF-8, unknown escapes, lone surrogates. */
typedef struct {
    const uint8_t *s;
    size_t n;
    int escaped;
    size_t decoded; /* bytes of the text with escapes undone */
} Str;

/* Eight bytes of plain text at once: none is a quote, a backslash, a control character or
 * non-ASCII (each test is exact: nonzero iff some byte matches). */
static inline int plain8(const uint8_t *p) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t v, quote, backslash;
    memcpy(&v, p, 8);
    quote = v ^ (ones * '"');
    backslash = v ^ (ones * '\\');
    uint64_t found = (v & highs) | ((v - ones * 0x20) & ~v & highs) | ((quote - ones) & ~quote & highs) |
                     ((backslash - ones) & ~backslash & highs);
    return found == 0;
}

#ifdef __SSE2__
#include <emmintrin.h>
/* The first byte of p[0..16) that is not plain text (as plain8 defines it), or 16. */
static inline int plain16(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    /* a signed compare: below 0x20 or at 0x80 and above (negative) */
    __m128i special = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                   _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
    int mask = _mm_movemask_epi8(special);
    return mask ? __builtin_ctz((unsigned)mask) : 16;
}
#endif

/* Skips plain text: to the first quote, backslash, control or non-ASCII byte, or near the end. */
static inline const uint8_t *skip_plain(const uint8_t *p, const uint8_t *end) {
#ifdef __SSE2__
    while (end - p >= 16) {
        int k = plain16(p);
        p += k;
        if (k < 16) return p;
    }
#endif
    while (end - p >= 8 && plain8(p)) p += 8;
    return p;
}

static int scan_string(P *x, Str *out) {
    ws(x);
    if (x->p >= x->end || *x->p != '"') return -1;
    const uint8_t *p = ++x->p, *end = x->end;
    out->s = p;
    out->escaped = 0;
    size_t saved = 0; /* bytes the escapes take beyond their text */
    while (p < end) {
        p = skip_plain(p, end);
        if (p >= end) break;
        uint8_t c = *p;
        if (c == '"') {
            out->n = (size_t)(p - out->s);
            out->decoded = out->n - saved;
            x->p = p + 1;
            return 0;
        }
        if (c < 0x20) return -1;
        if (c == '\\') {
            out->escaped = 1;
            if (end - p < 2) return -1;
            uint8_t e = p[1];
            if (e == 'u') {
                uint32_t u, low;
                if (end - p < 6 || hex4(p + 2, &u)) return -1;
                p += 6;
                if (u >= 0xdc00 && u <= 0xdfff) return -1;
                if (u >= 0xd800 && u <= 0xdbff) {
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &low)) return -1;
                    if (low < 0xdc00 || low > 0xdfff) return -1;
                    p += 6;
                    saved += 12 - 4;
                } else {
                    saved += 6 - (u < 0x80 ? 1 : u < 0x800 ? 2 : 3);
                }
                continue;
            }
            if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' && e != 'r' && e != 't') return -1;
            p += 2;
            saved += 1;
            continue;
        }
        if (c < 0x80) {
            p++;
            continue;
        }
        /* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
        size_t need;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf)
            need = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            need = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            need = 3, cp = c & 0x07;
        else
            return -1;
        if ((size_t)(end - p) <= need) return -1;
        for (size_t k = 1; k <= need; k++) {
            if ((p[k] & 0xc0) != 0x80) return -1;
            cp = (cp << 6) | (p[k] & 0x3f);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return -1;
        p += need + 1;
    }
    return -1;
}

/* The text of a scanned string (escapes undone) appended to the output. */
static int put_unescaped(Out *o, const Str *s) {
    if (out_reserve(o, s->n)) return -1; /* never longer than the raw text */
    uint8_t *q = o->p + o->len;
    const uint8_t *p = s->s, *end = s->s + s->n;
    while (p < end) {
        if (*p != '\\') { /* the plain run up to the next escape, at once */
            const uint8_t *next = memchr(p, '\\', (size_t)(end - p));
            size_t run = (size_t)((next ? next : end) - p);
            memcpy(q, p, run);
            q += run;
            p += run;
            continue;
        }
        uint8_t e = p[1];
        if (e != 'u') {
            static const uint8_t from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            *q++ = to[strchr((const char *)from, e) - (const char *)from];
            p += 2;
            continue;
        }
        uint32_t cp, low;
        hex4(p + 2, &cp);
        p += 6;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            hex4(p + 2, &low);
            p += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        }
        if (cp < 0x80) {
            *q++ = (uint8_t)cp;
        } else if (cp < 0x800) {
            *q++ = (uint8_t)(0xc0 | cp >> 6);
            *q++ = (uint8_t)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            *q++ = (uint8_t)(0xe0 | cp >> 12);
            *q++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
            *q++ = (uint8_t)(0x80 | (cp & 0x3f));
        } else {
            *q++ = (uint8_t)(0xf0 | cp >> 18);
            *q++ = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
            *q++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
            *q++ = (uint8_t)(0x80 | (cp & 0x3f));
        }
    }
    o->len = (size_t)(q - o->p);
    return 0;
}

/* A number token as json.loads reads it: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][-+]?[0-9]+)? */
typedef struct {
    const uint8_t *s;
    size_t n;
    int integral;
} Num;

static int scan_number(P *x, Num *num) {
    const uint8_t *p = x->p, *end = x->end;
    num->s = p;
    num->integral = 1;
    if (p < end && *p == '-') p++;
    if (p >= end) return -1;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < end && *p >= '0' && *p <= '9') p++;
    else
        return -1;
    if (p < end && *p == '.') {
        if (end - p < 2 || p[1] < '0' || p[1] > '9') return -1; /* json.loads: "1." is refused */
        num->integral = 0;
        p++;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        const uint8_t *q = p + 1;
        if (q < end && (*q == '+' || *q == '-')) q++;
        if (q >= end || *q < '0' || *q > '9') return -1;
        num->integral = 0;
        p = q;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    num->n = (size_t)(p - num->s);
    if (num->n > MAX_NUMBER) return -1;
    x->p = p;
    return 0;
}

/* -?[0-9]+ as sign and magnitude; -1 past 2^64 - 1 or not of that form. */
static int integer_of(const uint8_t *s, size_t n, int *negative, uint64_t *magnitude) {
    *negative = n > 0 && s[0] == '-';
    size_t i = (size_t)*negative;
    if (i >= n) return -1;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *magnitude = v;
    return 0;
}

static int double_of(const uint8_t *s, size_t n, double *out) {
    char text[MAX_NUMBER + 1];
    if (n > MAX_NUMBER) return -1;
    memcpy(text, s, n);
    text[n] = 0;
    char *stop;
    double v = strtod(text, &stop); /* correctly rounded, as Python's float() */
    if (stop != text + n) return -1;    /* e.g. a locale with another decimal point */
    if (v - v != 0) return -1;          /* inf: json_format refuses a number that overflows */
    *out = v;
    return 0;
}

static const char *const ID_KEYS[] = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"};

static int is_id_key(const Str *key) {
    for (size_t i = 0; i < sizeof ID_KEYS / sizeof *ID_KEYS; i++)
        if (strlen(ID_KEYS[i]) == key->n && !memcmp(ID_KEYS[i], key->s, key->n)) return 1;
    return 0;
}

static int hex_digit(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Would bytes.fromhex() take it the way we read it (pairs of hex digits, nothing else)? */
static int plain_hex(const Str *s) {
    if (s->escaped || s->n % 2) return 0;
    for (size_t i = 0; i < s->n; i++)
        if (hex_digit(s->s[i]) < 0) return 0;
    return 1;
}

static int skip_value(P *x);

/* Keys of one object, to find a repeated one (json.loads with the duplicate check refuses it). */
typedef struct {
    Str keys[MAX_UNKNOWN_KEYS];
    int n;
} KeySet;

static int keyset_add(KeySet *set, const Str *key) {
    if (key->escaped || set->n >= MAX_UNKNOWN_KEYS) return -1;
    for (int i = 0; i < set->n; i++)
        if (set->keys[i].n == key->n && !memcmp(set->keys[i].s, key->s, key->n)) return -1;
    set->keys[set->n++] = *key;
    return 0;
}

/* The value of a key no message knows: checked and skipped. An id key with a string value
 * must still be hex (otlp_json rewrites every one before ParseDict ignores it). */
static int skip_member(P *x, const Str *key) {
    if (key->n && key->s[0] == '[') return -1; /* an extension name: json_format refuses it */
    ws(x);
    if (is_id_key(key) && x->p < x->end && *x->p == '"') {
        Str value;
        if (scan_string(x, &value) || !plain_hex(&value)) return -1;
        return 0;
    }
    return skip_value(x);
}

static int skip_value(P *x) {
    ws(x);
    if (x->p >= x->end) return -1;
    uint8_t c = *x->p;
    if (c == '"') {
        Str s;
        return scan_string(x, &s);
    }
    if (c == '{' || c == '[') {
        if (++x->depth > MAX_JSON_DEPTH) return -1;
        x->p++;
        ws(x);
        uint8_t close = c == '{' ? '}' : ']';
        if (x->p < x->end && *x->p == close) {
            x->p++;
            x->depth--;
            return 0;
        }
        KeySet keys;
        keys.n = 0;
        for (;;) {
            if (c == '{') {
                Str key;
                if (scan_string(x, &key) || keyset_add(&keys, &key) || expect(x, ':') || skip_member(x, &key)) return -1;
            } else if (skip_value(x)) {
                return -1;
            }
            ws(x);
            if (x->p >= x->end) return -1;
            if (*x->p == ',') {
                x->p++;
                continue;
            }
            if (*x->p != close) return -1;
            x->p++;
            x->depth--;
            return 0;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        Num num;
        return scan_number(x, &num);
    }
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(x->end - x->p) >= n && !memcmp(x->p, words[i], n)) {
            x->p += n;
            return 0;
        }
    }
    return -1; /* NaN, Infinity and anything else */
}

static inline int peek_word(P *x, const char *word, size_t n) {
    return (size_t)(x->end - x->p) >= n && !memcmp(x->p, word, n);
}

/* ------------------------------------------------------------------------------------ */
/* Scalars.                                                                               */

static int wire_type_of(uint32_t type) {
    switch (type) {
        case T_DOUBLE:
        case T_FIXED64:
        case T_SFIXED64: return 1;
        case T_FIXED32:
        case T_SFIXED32: return 5;
        case T_STRING:
        case T_BYTES:
        case T_MESSAGE: return 2;
        default: return 0;
    }
}

/* An integer (sign, magnitude) in the field's range, as the raw 64 bits to write. */
static int integer_in_range(uint32_t type, int negative, uint64_t m, uint64_t *bits) {
    int64_t lo;
    uint64_t hi;
    switch (type) {
        case T_INT32:
        case T_SINT32:
        case T_SFIXED32:
        case T_ENUM: lo = INT32_MIN, hi = INT32_MAX; break;
        case T_UINT32:
        case T_FIXED32: lo = 0, hi = UINT32_MAX; break;
        case T_INT64:
        case T_SINT64:
        case T_SFIXED64: lo = INT64_MIN, hi = INT64_MAX; break;
        default: lo = 0, hi = UINT64_MAX; break;
    }
    if (negative) {
        if (m == 0) {
            *bits = 0;
            return 0;
        }
        if (lo == 0 || m - 1 > (uint64_t)(-(lo + 1))) return -1;
        *bits = (uint64_t)0 - m;
    } else {
        if (m > hi) return -1;
        *bits = m;
    }
    return 0;
}

/* The value of a numeric field (no tag): varint, zigzag or fixed, by type. */
static int put_number(Out *o, uint32_t type, uint64_t bits) {
    switch (type) {
        case T_SINT32: {
            int32_t v = (int32_t)(uint32_t)bits;
            return put_varint(o, (uint32_t)(((uint32_t)v << 1) ^ (uint32_t)(v >> 31)));
        }
        case T_SINT64: {
            int64_t v = (int64_t)bits;
            return put_varint(o, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
        }
        case T_DOUBLE:
        case T_FIXED64:
        case T_SFIXED64: return put_fixed(o, bits, 8);
        case T_FIXED32:
        case T_SFIXED32: return put_fixed(o, bits, 4);
        default: return put_varint(o, bits); /* int32/enum negatives: sign-extended, 10 bytes */
    }
}

/* 1: the field is set, with its 64 bits in *bits; 0: not set (an unknown enum name, which
 * json_format skips when unknown fields are ignored); -1: not decided here. */
static int scalar_value(P *x, const Field *f, uint64_t *bits) {
    ws(x);
    if (x->p >= x->end) return -1;
    uint8_t c = *x->p;
    int negative;
    uint64_t m;
    if (f->type == T_BOOL) {
        if (peek_word(x, "true", 4)) {
            x->p += 4;
            *bits = 1;
            return 1;
        }
        if (peek_word(x, "false", 5)) {
            x->p += 5;
            *bits = 0;
            return 1;
        }
        return -1;
    }
    if (f->type == T_DOUBLE) {
        double v;
        if (c == '"') {
            Str s;
            if (scan_string(x, &s) || s.escaped) return -1;
            if (s.n == 3 && !memcmp(s.s, "NaN", 3)) {
                *bits = 0x7ff8000000000000ULL; /* float('nan') */
                return 1;
            }
            if (s.n == 8 && !memcmp(s.s, "Infinity", 8)) {
                *bits = 0x7ff0000000000000ULL;
                return 1;
            }
            if (s.n == 9 && !memcmp(s.s, "-Infinity", 9)) {
                *bits = 0xfff0000000000000ULL;
                return 1;
            }
            /* float() of the text: only texts that are JSON numbers themselves */
            P inner = {s.s, s.s + s.n, {0}, 0};
            Num num;
            if (scan_number(&inner, &num) || inner.p != inner.end || double_of(s.s, s.n, &v)) return -1;
        } else {
            Num num;
            if (scan_number(x, &num) || double_of(num.s, num.n, &v)) return -1;
            if (num.integral && v == 0) v = 0.0; /* float(int("-0")) is +0.0 */
        }
        memcpy(bits, &v, 8);
        return 1;
    }
    /* Integers and enums. */
    if (c == '"') {
        Str s;
        if (scan_string(x, &s) || s.escaped) return -1;
        if (f->type == T_ENUM) {
            const EnumSpec *e = &SCHEMA.enums[f->sub];
            for (uint32_t i = 0; i < e->n; i++)
                if (e->values[i].len == s.n && !memcmp(e->values[i].name, s.s, s.n)) {
                    *bits = (uint64_t)(int64_t)e->values[i].number;
                    return 1;
                }
        }
        if (integer_of(s.s, s.n, &negative, &m) == 0) return integer_in_range(f->type, negative, m, bits) ? -1 : 1;
        if (f->type != T_ENUM) return -1;
        /* An unknown name: skipped, if int() cannot read it either (it holds a letter). */
        for (size_t i = 0; i < s.n; i++)
            if ((s.s[i] | 0x20) >= 'a' && (s.s[i] | 0x20) <= 'z') return 0;
        return s.n == 0 ? 0 : -1;
    }
    Num num;
    if (scan_number(x, &num) || !num.integral || integer_of(num.s, num.n, &negative, &m)) return -1;
    return integer_in_range(f->type, negative, m, bits) ? -1 : 1;
}

static int base64_value(uint8_t c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* base64 (either alphabet) of a bytes field, unpadded or padded to a multiple of 4. */
static int put_base64(Out *o, const Str *s) {
    if (s->escaped) return -1;
    size_t data = 0;
    while (data < s->n && base64_value(s->s[data]) >= 0) data++;
    size_t pads = s->n - data;
    for (size_t i = data; i < s->n; i++)
        if (s->s[i] != '=') return -1;
    if (data % 4 == 1 || (pads && s->n % 4) || pads > 2) return -1;
    size_t len = data / 4 * 3 + (data % 4 ? data % 4 - 1 : 0);
    if (put_varint(o, len) || out_reserve(o, len + 3)) return -1;
    uint8_t *q = o->p + o->len;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < data; i++) {
        acc = (acc << 6) | (uint32_t)base64_value(s->s[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *q++ = (uint8_t)(acc >> bits);
        }
    }
    o->len += len;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Messages.                                                                              */

static int message(P *x, const MsgSpec *m, int depth);

static const Field *find_field(const MsgSpec *m, const Str *key) {
    for (uint32_t i = 0; i < m->n; i++) {
        const Field *f = &m->fields[i];
        if (f->jlen == key->n && !memcmp(f->json, key->s, key->n)) return f;
    }
    for (uint32_t i = 0; i < m->n; i++) {
        const Field *f = &m->fields[i];
        if (f->nlen == key->n && !memcmp(f->name, key->s, key->n)) return f;
    }
    return NULL;
}

static int sub_message(P *x, const Field *f, int depth) {
    ws(x);
    if (x->p >= x->end || *x->p != '{') return -1; /* json_format iterates strings and lists: not copied */
    size_t start;
    if (put_tag(&x->out, f->number, 2) || open_len(&x->out, &start)) return -1;
    if (message(x, &SCHEMA.messages[f->sub], depth + 1)) return -1;
    return close_len(&x->out, start);
}

/* One value of a singular field or one element of a repeated one; packed: no tag. */
static int field_value(P *x, const Field *f, int depth, int packed) {
    if (f->type == T_MESSAGE) return sub_message(x, f, depth);
    if (f->type == T_STRING || f->type == T_BYTES) {
        Str s;
        if (scan_string(x, &s) || put_tag(&x->out, f->number, 2)) return -1;
        if (f->flags & F_ID) {
            if (!plain_hex(&s) || put_varint(&x->out, s.n / 2) || out_reserve(&x->out, s.n / 2)) return -1;
            for (size_t i = 0; i < s.n; i += 2)
                x->out.p[x->out.len++] = (uint8_t)(hex_digit(s.s[i]) << 4 | hex_digit(s.s[i + 1]));
            return 0;
        }
        if (f->type == T_BYTES) return put_base64(&x->out, &s);
        if (!s.escaped) {
            if (put_varint(&x->out, s.n) || out_reserve(&x->out, s.n)) return -1;
            memcpy(x->out.p + x->out.len, s.s, s.n);
            x->out.len += s.n;
            return 0;
        }
        if (put_varint(&x->out, s.decoded)) return -1;
        size_t before = x->out.len;
        if (put_unescaped(&x->out, &s)) return -1;
        return x->out.len - before == s.decoded ? 0 : -1; /* cannot differ: checked all the same */
    }
    uint64_t bits;
    int set = scalar_value(x, f, &bits);
    if (set <= 0) return set == 0 && !packed ? 0 : -1; /* an unknown enum name in a list: not copied */
    if (!packed && put_tag(&x->out, f->number, wire_type_of(f->type))) return -1;
    return put_number(&x->out, f->type, bits);
}

static int repeated(P *x, const Field *f, int depth) {
    if (expect(x, '[')) return -1;
    if (++x->depth > MAX_JSON_DEPTH) return -1;
    ws(x);
    if (x->p < x->end && *x->p == ']') {
        x->p++;
        x->depth--;
        return 0;
    }
    int packed = f->type != T_MESSAGE && f->type != T_STRING && f->type != T_BYTES;
    size_t start = 0;
    if (packed && (put_tag(&x->out, f->number, 2) || open_len(&x->out, &start))) return -1;
    for (;;) {
        ws(x);
        if (peek_word(x, "null", 4)) return -1; /* json_format refuses null elements */
        if (field_value(x, f, depth, packed)) return -1;
        ws(x);
        if (x->p >= x->end) return -1;
        if (*x->p == ',') {
            x->p++;
            continue;
        }
        if (*x->p != ']') return -1;
        x->p++;
        x->depth--;
        return packed ? close_len(&x->out, start) : 0;
    }
}

static int message(P *x, const MsgSpec *m, int depth) {
    if (depth > MAX_MESSAGE_DEPTH || ++x->depth > MAX_JSON_DEPTH) return -1;
    if (expect(x, '{')) return -1;
    ws(x);
    if (x->p < x->end && *x->p == '}') {
        x->p++;
        x->depth--;
        return 0;
    }
    uint64_t seen = 0, oneofs = 0; /* fields met (by index), oneofs set */
    KeySet unknown;
    unknown.n = 0;
    for (;;) {
        Str key;
        if (scan_string(x, &key) || expect(x, ':')) return -1;
        const Field *f = key.escaped ? NULL : find_field(m, &key);
        if (key.escaped) return -1;
        if (!f) {
            if (keyset_add(&unknown, &key) || skip_member(x, &key)) return -1;
        } else {
            uint64_t bit = 1ULL << (f - m->fields);
            if ((f->flags & F_UNSUPPORTED) || (seen & bit)) return -1; /* twice: both spellings, or a duplicate */
            seen |= bit;
            ws(x);
            if (peek_word(x, "null", 4)) {
                /* ClearField of a field not set: nothing, unless a oneof sibling is set. */
                if (f->oneof >= 0 && (oneofs & (1ULL << f->oneof))) return -1;
                x->p += 4;
            } else {
                if (f->oneof >= 0) {
                    if (oneofs & (1ULL << f->oneof)) return -1; /* json_format refuses a second member */
                    oneofs |= 1ULL << f->oneof;
                }
                if (f->flags & F_REPEATED ? repeated(x, f, depth) : field_value(x, f, depth, 0)) return -1;
            }
        }
        ws(x);
        if (x->p >= x->end) return -1;
        if (*x->p == ',') {
            x->p++;
            continue;
        }
        if (*x->p != '}') return -1;
        x->p++;
        x->depth--;
        return 0;
    }
}

/* The protobuf bytes of the JSON body for message number `root` of the table; -1: undecided. */
static int transcode(uint32_t root, const uint8_t *body, size_t size, Out *out) {
    if (root >= SCHEMA.n_messages) return -1;
    P x = {body, body + size, {0}, 0};
    /* The protobuf is nearly always smaller than the JSON: one allocation, no copies on growth. */
    if (out_reserve(&x.out, size + 64)) {
        *out = x.out;
        return -1;
    }
    int status = message(&x, &SCHEMA.messages[root], 1);
    if (status == 0) {
        ws(&x);
        if (x.p != x.end) status = -1;
    }
    *out = x.out;
    return status;
}

#ifdef OTEL_JSONPB_FUZZ
/* fuzz/run.py writes the table of the installed protos into this header. */
#include OTEL_JSONPB_SCHEMA

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int loaded;
    if (!loaded) {
        if (schema_load(SCHEMA_BLOB, sizeof SCHEMA_BLOB)) abort();
        loaded = 1;
    }
    for (uint32_t root = 0; root < 3; root++) {
        Out out;
        transcode(root, data, size, &out);
        free(out.p);
    }
    return 0;
}
#else

static PyObject *py_configure(PyObject *self, PyObject *args) {
    Py_buffer table;
    if (!PyArg_ParseTuple(args, "y*", &table)) return NULL;
    int status = schema_load(table.buf, (size_t)table.len);
    PyBuffer_Release(&table);
    if (status) {
        PyErr_SetString(PyExc_ValueError, "the message table could not be read");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_transcode(PyObject *self, PyObject *args) {
    unsigned int root;
    Py_buffer body;
    if (!PyArg_ParseTuple(args, "Iy*", &root, &body)) return NULL;
    Out out;
    int status;
    Py_BEGIN_ALLOW_THREADS status = transcode(root, body.buf, (size_t)body.len, &out);
    Py_END_ALLOW_THREADS PyBuffer_Release(&body);
    if (status) {
        free(out.p);
        Py_RETURN_NONE;
    }
    PyObject *result = PyBytes_FromStringAndSize((const char *)out.p, (Py_ssize_t)out.len);
    free(out.p);
    return result;
}

static PyMethodDef METHODS[] = {
    {"configure", py_configure, METH_VARARGS, "configure(table: bytes): the OTLP message table (jsonpb.py)"},
    {"transcode", py_transcode, METH_VARARGS,
     "transcode(root, body) -> protobuf bytes of the OTLP/JSON body, or None (undecided: use the Python path)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_jsonpb", "OTLP/JSON to protobuf bytes.", -1, METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jsonpb(void) { return PyModule_Create(&MODULE); }
#endif /* OTEL_JSONPB_FUZZ */
