/*@ header */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct { const float *f; const uint8_t *q; float lo, step; } vec_t;
typedef struct { int c, h, w, oc, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, groups; } conv_t;

static float vget(const vec_t *v, uint32_t i) {
    return v->f ? v->f[i] : (v->q ? v->lo + v->step * (float)v->q[i] : v->lo);
}
/*@ stream */
typedef struct { const float *book; const uint8_t *codes, *gaps; uint32_t nsym; unsigned cbits, ibits; } stream_t;

static uint32_t bits_at(const uint8_t *p, uint32_t bit, unsigned n) {
    const uint8_t *b = p + (bit >> 3);
    uint32_t v = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
    return (v >> (bit & 7u)) & ((1u << n) - 1u);
}
/*@ conv */
/* out[oc] += w * in[ic] shifted by one kernel tap, over every output pixel the tap reaches */
static void conv_tap(const conv_t *g, const float *in, float *out, uint32_t pos, float wv) {
    int cg = g->c / g->groups, ocg = g->oc / g->groups;
    int kx = (int)(pos % (uint32_t)g->kw), ky, icg, oc, ic, offy, offx, y0, y1, x0, x1, oy, ox;
    pos /= (uint32_t)g->kw;
    ky = (int)(pos % (uint32_t)g->kh);
    pos /= (uint32_t)g->kh;
    icg = (int)(pos % (uint32_t)cg);
    oc = (int)(pos / (uint32_t)cg);
    ic = (oc / ocg) * cg + icg;
    offy = ky * g->dh - g->ph;
    offx = kx * g->dw - g->pw;
    y0 = offy >= 0 ? 0 : (-offy + g->sh - 1) / g->sh;
    x0 = offx >= 0 ? 0 : (-offx + g->sw - 1) / g->sw;
    if (g->h - 1 - offy < 0 || g->w - 1 - offx < 0) return;
    y1 = (g->h - 1 - offy) / g->sh;
    x1 = (g->w - 1 - offx) / g->sw;
    if (y1 > g->oh - 1) y1 = g->oh - 1;
    if (x1 > g->ow - 1) x1 = g->ow - 1;
    for (oy = y0; oy <= y1; ++oy) {
        const float *src = in + ((size_t)ic * g->h + (size_t)(oy * g->sh + offy)) * g->w + offx;
        float *dst = out + ((size_t)oc * g->oh + oy) * g->ow;
        for (ox = x0; ox <= x1; ++ox) dst[ox] += wv * src[ox * g->sw];
    }
}

static void conv_init(const conv_t *g, float *out, const vec_t *bias) {
    int oc, i, n = g->oh * g->ow;
    for (oc = 0; oc < g->oc; ++oc) {
        float b = bias ? vget(bias, (uint32_t)oc) : 0.0f;
        for (i = 0; i < n; ++i) out[oc * n + i] = b;
    }
}
/*@ conv_stream conv stream */
/* weights decoded as they are used: gap symbols give positions, codes index the codebook */
static void conv_stream(const conv_t *g, const float *in, float *out, const stream_t *s, const vec_t *bias) {
    uint32_t esc = (1u << s->ibits) - 1u, pos = 0, k = 0, i;
    conv_init(g, out, bias);
    for (i = 0; i < s->nsym; ++i) {
        uint32_t sym = bits_at(s->gaps, i * s->ibits, s->ibits);
        if (sym == esc) { pos += esc; continue; }
        pos += sym + 1u;
        conv_tap(g, in, out, pos - 1u, s->book[bits_at(s->codes, k * s->cbits, s->cbits)]);
        ++k;
    }
}
/*@ conv_dense conv */
static void conv_dense(const conv_t *g, const float *in, float *out, const vec_t *w, uint32_t n, const vec_t *bias) {
    uint32_t i;
    conv_init(g, out, bias);
    for (i = 0; i < n; ++i) {
        float wv = vget(w, i);
        if (wv != 0.0f) conv_tap(g, in, out, i, wv);
    }
}
/*@ batchnorm */
static void batchnorm(const float *in, float *out, int c, int hw, const vec_t *w, const vec_t *b, const vec_t *m,
                      const vec_t *v, float eps) {
    int ch, i;
    for (ch = 0; ch < c; ++ch) {
        float s = (w ? vget(w, (uint32_t)ch) : 1.0f) / sqrtf(vget(v, (uint32_t)ch) + eps);
        float t = (b ? vget(b, (uint32_t)ch) : 0.0f) - vget(m, (uint32_t)ch) * s;
        for (i = 0; i < hw; ++i) out[ch * hw + i] = in[ch * hw + i] * s + t;
    }
}
/*@ unary */
enum { RELU, RELU6, HSWISH, HSIGMOID, SILU, SIGMOID, TANH, LEAKY, HARDTANH };

static float clampf(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

static void unary(int fn, const float *in, float *out, uint32_t n, float a, float b) {
    uint32_t i;
    for (i = 0; i < n; ++i) {
        float x = in[i];
        switch (fn) {
        case RELU: x = x > 0.0f ? x : 0.0f; break;
        case RELU6: x = clampf(x, 0.0f, 6.0f); break;
        case HSWISH: x = x * clampf(x + 3.0f, 0.0f, 6.0f) / 6.0f; break;
        case HSIGMOID: x = clampf(x + 3.0f, 0.0f, 6.0f) / 6.0f; break;
        case SILU: x = x / (1.0f + expf(-x)); break;
        case SIGMOID: x = 1.0f / (1.0f + expf(-x)); break;
        case TANH: x = tanhf(x); break;
        case LEAKY: x = x >= 0.0f ? x : a * x; break;
        default: x = clampf(x, a, b); break;
        }
        out[i] = x;
    }
}
/*@ pool */
static void pool2d(int is_max, const float *in, float *out, const int *p, int count_pad) {
    /* p: c h w oh ow kh kw sh sw ph pw dh dw */
    int ch, oy, ox, ky, kx;
    for (ch = 0; ch < p[0]; ++ch)
        for (oy = 0; oy < p[3]; ++oy)
            for (ox = 0; ox < p[4]; ++ox) {
                int ys = oy * p[7] - p[9], xs = ox * p[8] - p[10];
                int ye = ys + p[5] > p[1] + p[9] ? p[1] + p[9] : ys + p[5];
                int xe = xs + p[6] > p[2] + p[10] ? p[2] + p[10] : xs + p[6];
                float acc = is_max ? -INFINITY : 0.0f;
                for (ky = 0; ky < p[5]; ++ky)
                    for (kx = 0; kx < p[6]; ++kx) {
                        int iy = ys + ky * p[11], ix = xs + kx * p[12];
                        float x;
                        if (iy < 0 || iy >= p[1] || ix < 0 || ix >= p[2]) continue;
                        x = in[(ch * p[1] + iy) * p[2] + ix];
                        acc = is_max ? (x > acc || x != x ? x : acc) : acc + x;
                    }
                if (!is_max) {
                    int area = (ye - ys) * (xe - xs);
                    ys = ys < 0 ? 0 : ys; xs = xs < 0 ? 0 : xs;
                    ye = ye > p[1] ? p[1] : ye; xe = xe > p[2] ? p[2] : xe;
                    acc /= (float)(count_pad ? area : (ye - ys) * (xe - xs));
                }
                out[(ch * p[3] + oy) * p[4] + ox] = acc;
            }
}
/*@ adaptive */
static void adaptive2d(int is_max, const float *in, float *out, int c, int h, int w, int oh, int ow) {
    int ch, oy, ox, y, x;
    for (ch = 0; ch < c; ++ch)
        for (oy = 0; oy < oh; ++oy)
            for (ox = 0; ox < ow; ++ox) {
                int y0 = oy * h / oh, y1 = ((oy + 1) * h + oh - 1) / oh;
                int x0 = ox * w / ow, x1 = ((ox + 1) * w + ow - 1) / ow;
                float acc = is_max ? -INFINITY : 0.0f;
                for (y = y0; y < y1; ++y)
                    for (x = x0; x < x1; ++x) {
                        float v = in[(ch * h + y) * w + x];
                        acc = is_max ? (v > acc || v != v ? v : acc) : acc + v;
                    }
                out[(ch * oh + oy) * ow + ox] = is_max ? acc : acc / (float)((y1 - y0) * (x1 - x0));
            }
}
/*@ binary */
enum { ADD, SUB, MUL, DIV };

/* d: four output dims, then a's and b's strides (0 where broadcast) */
static void binary(int fn, const float *a, const float *b, float *out, const int *d) {
    int i, j, k, l;
    float *o = out;
    for (i = 0; i < d[0]; ++i)
        for (j = 0; j < d[1]; ++j)
            for (k = 0; k < d[2]; ++k)
                for (l = 0; l < d[3]; ++l) {
                    float x = a[i * d[4] + j * d[5] + k * d[6] + l * d[7]];
                    float y = b[i * d[8] + j * d[9] + k * d[10] + l * d[11]];
                    *o++ = fn == ADD ? x + y : fn == SUB ? x - y : fn == MUL ? x * y : x / y;
                }
}
/*@ cat */
static void copy_block(float *out, const float *in, uint32_t outer, uint32_t inner_in, uint32_t inner_out) {
    uint32_t i;
    for (i = 0; i < outer; ++i) memmove(out + (size_t)i * inner_out, in + (size_t)i * inner_in, inner_in * sizeof(float));
}
/*@ place */
static void place(const float *in, float *out, const int *p, const int *src, const int *dst) {
    /* p: c h w oc oh ow stride pairs */
    int k, oy, ox;
    memset(out, 0, (size_t)p[3] * p[4] * p[5] * sizeof(float));
    for (k = 0; k < p[7]; ++k)
        for (oy = 0; oy < p[4]; ++oy)
            for (ox = 0; ox < p[5]; ++ox)
                out[((size_t)dst[k] * p[4] + oy) * p[5] + ox] = in[((size_t)src[k] * p[1] + oy * p[6]) * p[2] + ox * p[6]];
}
