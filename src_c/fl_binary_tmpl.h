/* fl_binary_tmpl.h: the elementwise losses for one float type, included once per type by
 * fl_kernels.h with FL_T (float or double) and FL_S(name) (appends _f32 or _f64) defined.
 * Every name defined here is static: each instruction-set translation unit gets its own copy.
 */

/* ---- The formulas: one place each, shared by every reduction and instruction set. ---- */

/* Binary cross-entropy with logits and pos_weight pw, for a target y in [0, 1]:
 *     pw*y*softplus(-x) + (1-y)*softplus(x),
 * which is torch's (1-y)*x - (1+(pw-1)*y)*logsigmoid(x) rearranged so that both terms are
 * non-negative (no cancellation, also for soft labels; the textbook max(x,0) - x*y + log1p(e^-|x|)
 * loses every digit of x - x*y for y near 1). With L = log1p(exp(-|x|)),
 *     softplus(x) = max(x, 0) + L,   softplus(-x) = max(-x, 0) + L,
 * so the loss is (pw*y + 1-y)*L + c*|x|, where c is the coefficient of the softplus whose max
 * term is |x|: 1-y for x > 0, pw*y otherwise. Nothing overflows, and a zero c times an infinite
 * |x| gives 0 (x = +inf, y = 1 is a perfect prediction, loss 0), not torch's nan. Without a
 * pos_weight (has_pw a constant 0) the coefficient of L is exactly 1. */
FL_INLINE FL_T FL_S(fl_bce_logits)(FL_T x, FL_T y, FL_T pw, const int has_pw) {
    FL_T abs_x = x < 0 ? -x : x;
    FL_T L = FL_S(fl_log1p_unit)(FL_S(fl_exp_nonpos)(-abs_x));
    FL_T c_pos = has_pw ? pw * y : y, c_neg = 1 - y;
    return (has_pw ? c_pos + c_neg : 1) * L + FL_S(fl_coef_inf)(x > 0 ? c_neg : c_pos, abs_x);
}

/* Binary cross-entropy on a probability p in [0, 1], exactly torch's:
 *     (y-1)*max(log1p(-p), -100) - y*max(log(p), -100).
 * The clamps make 0*log(0) contribute 0 and bound one element's loss by 100. */
FL_INLINE FL_T FL_S(fl_bce)(FL_T p, FL_T y) {
    FL_T log_p = FL_S(fl_log_unit)(p);
    FL_T log_q = FL_S(fl_log1p_neg)(p);
    log_p = log_p < -100 ? -100 : log_p;
    log_q = log_q < -100 ? -100 : log_q;
    return (y - 1) * log_q - y * log_p;
}

/* Sigmoid focal loss (torchvision's sigmoid_focal_loss) for a logit x and a target y in [0, 1]:
 *     alpha_t * ce * q^gamma,  ce = BCE with logits,  q = 1 - p_t = y*sigmoid(-x) + (1-y)*sigmoid(x),
 *     alpha_t = alpha*y + (1-alpha)*(1-y)  (alpha_pos = alpha, alpha_neg = 1 - alpha; both 1 when
 *     the caller disables alpha).
 * With t = exp(-|x|) and a = 1/(1+t), sigmoid(|x|) = a and sigmoid(-|x|) = t*a, so
 *     q = (c_big + c_small*t) * a,
 * where c_big is the coefficient of the sigmoid of |x| (1-y for x > 0, y otherwise) and c_small
 * the other one: a sum of non-negative terms, never 1 minus a rounded probability. Integer gamma
 * (0 to 4) multiplies q by itself. Other gamma use log q = log(c_big + c_small*t) - log1p(t),
 * which for c_big = 0 (a hard label on the correct side) is log(c_small) - |x| - log1p(t): exact
 * in log space where q itself would underflow, so q^gamma = exp(gamma*log q) stays accurate and
 * gamma in (0, 1) gives no nan at saturated logits. */
typedef struct {
    FL_T abs_x, t, a, L;  /* |x|, exp(-|x|), 1/(1+t), log1p(t) */
    FL_T c_big, c_small;  /* the coefficients of sigmoid(|x|) and sigmoid(-|x|) in q */
    FL_T ce, factor;      /* BCE with logits and q^gamma */
} FL_S(fl_focal_terms);

FL_INLINE FL_S(fl_focal_terms) FL_S(fl_sigmoid_focal_terms)(FL_T x, FL_T y, FL_T gamma,
                                                            const int int_gamma /* 0..4, or -1 */) {
    FL_S(fl_focal_terms) f;
    f.abs_x = x < 0 ? -x : x;
    f.t = FL_S(fl_exp_nonpos)(-f.abs_x);
    f.a = 1 / (1 + f.t); /* the gradients need it too: one division for both */
    f.L = FL_S(fl_log1p_unit)(f.t);
    f.c_big = x > 0 ? 1 - y : y;
    f.c_small = x > 0 ? y : 1 - y;
    f.ce = f.L + FL_S(fl_coef_inf)(f.c_big, f.abs_x); /* fl_bce_logits with pw = 1 */
    if (int_gamma >= 0) {
        FL_T q = (f.c_big + f.c_small * f.t) * f.a, q2 = q * q;
        f.factor = (int_gamma & 1 ? q : 1) * (int_gamma & 2 ? q2 : 1) *
                   (int_gamma & 4 ? q2 * q2 : 1);
    } else {
        FL_T log_q = FL_S(fl_log)(f.c_big == 0 ? f.c_small : f.c_big + f.c_small * f.t) - f.L;
        if (f.c_big == 0) log_q -= f.abs_x;
        f.factor = FL_S(fl_exp_nonpos)(gamma * log_q);
    }
    return f;
}

/* alpha_t * ce * q^gamma from the terms; alpha_t = 0 (alpha = 1, y = 0) times an infinite loss
 * is 0, the limit */
FL_INLINE FL_T FL_S(fl_sigmoid_focal_value)(FL_S(fl_focal_terms) f, FL_T alpha_t) {
    return FL_S(fl_coef)(alpha_t, FL_S(fl_coef)(f.factor, f.ce));
}

FL_INLINE FL_T FL_S(fl_sigmoid_focal)(FL_T x, FL_T y, FL_T alpha_pos, FL_T alpha_neg, FL_T gamma,
                                      const int int_gamma /* 0..4, or -1 */) {
    return FL_S(fl_sigmoid_focal_value)(FL_S(fl_sigmoid_focal_terms)(x, y, gamma, int_gamma),
                                        alpha_pos * y + alpha_neg * (1 - y));
}

/* ---- Reading one block of each operand as a contiguous array of FL_T. ---- */

/* Contiguous operands are read in place; strided ones and other target types are copied into
 * buf, a block at a time (buf sits in L1, so this costs a fraction of the loss itself). */
#define FL_GATHER(SRC_T, src, stride, len, buf)                                          \
    do {                                                                                 \
        const SRC_T *src_ = (const SRC_T *)(src);                                        \
        if ((stride) == 1)                                                               \
            for (ptrdiff_t k_ = 0; k_ < (len); k_++) (buf)[k_] = (FL_T)src_[k_];         \
        else                                                                             \
            for (ptrdiff_t k_ = 0; k_ < (len); k_++) (buf)[k_] = (FL_T)src_[k_ * (stride)]; \
    } while (0)

FL_INLINE const FL_T *FL_S(fl_read_input)(const fl_binary_args *a, ptrdiff_t start,
                                          ptrdiff_t len, FL_T *buf) {
    const FL_T *x = (const FL_T *)a->input + start * a->input_stride;
    if (a->input_stride == 1) return x;
    FL_GATHER(FL_T, x, a->input_stride, len, buf);
    return buf;
}

FL_INLINE const FL_T *FL_S(fl_read_target)(const fl_binary_args *a, ptrdiff_t start,
                                           ptrdiff_t len, FL_T *buf) {
    ptrdiff_t s = a->target_stride;
    switch (a->target_type) {
    case FL_TARGET_U8:
        FL_GATHER(unsigned char, (const unsigned char *)a->target + start * s, s, len, buf);
        return buf;
    case FL_TARGET_I64:
        FL_GATHER(long long, (const long long *)a->target + start * s, s, len, buf);
        return buf;
    default: {
        const FL_T *y = (const FL_T *)a->target + start * s;
        if (s == 1) return y;
        FL_GATHER(FL_T, y, s, len, buf);
        return buf;
    }
    }
}

#undef FL_GATHER

/* The n values of src followed by values `pad` up to n_padded, in buf (src may be buf). */
FL_INLINE const FL_T *FL_S(fl_pad)(const FL_T *src, ptrdiff_t n, ptrdiff_t n_padded, FL_T pad,
                                   FL_T *buf) {
    if (src != buf) memcpy(buf, src, (size_t)n * sizeof(FL_T));
    for (ptrdiff_t k = n; k < n_padded; k++) buf[k] = pad;
    return buf;
}

/* ---- The loop and the block entry points. ---- */

/* Range checks ride along in the loop at the cost of two or three vector operations:
 * min(v, 1 - v) is negative exactly when v is outside [0, 1] (or infinite), and a sum of the v
 * is nan exactly when one of them is (min ignores nan). */
#define FL_OUTSIDE_UNIT(lo, total) (!((lo) >= 0) | ((total) != (total)))

typedef struct {
    FL_T alpha_pos, alpha_neg, gamma; /* sigmoid focal loss */
    int int_gamma;                    /* gamma if it is an integer 0..4, else -1 */
} FL_S(fl_focal_params);

/* One chunk of one loss: stores the losses to out, returns their float sum and sets FL_BAD_*
 * flags. loss and has_* are constants after inlining, so each combination is its own vectorized
 * loop. */
FL_INLINE FL_T FL_S(fl_binary_loop)(const FL_T *restrict x, const FL_T *restrict y,
                                    const FL_T *restrict w, const FL_T *restrict pw,
                                    FL_T *restrict out, ptrdiff_t len,
                                    FL_S(fl_focal_params) f, int *flags, const int loss,
                                    const int has_w, const int has_pw, const int general_gamma) {
    FL_T sum = 0, x_lo = 0, x_sum = 0, y_lo = 0, y_sum = 0;
#pragma omp simd reduction(+ : sum, x_sum, y_sum) reduction(min : x_lo, y_lo)
    for (ptrdiff_t k = 0; k < len; k++) {
        FL_T xk = x[k], yk = y[k], l;
        FL_T y_dist = yk < 1 - yk ? yk : 1 - yk;
        y_lo = y_dist < y_lo ? y_dist : y_lo;
        y_sum += yk;
        if (loss == FL_LOSS_BCE) { /* xk is a probability: check it too */
            FL_T x_dist = xk < 1 - xk ? xk : 1 - xk;
            x_lo = x_dist < x_lo ? x_dist : x_lo;
            x_sum += xk;
            l = FL_S(fl_bce)(xk, yk);
        } else if (loss == FL_LOSS_BCE_LOGITS) {
            l = FL_S(fl_bce_logits)(xk, yk, has_pw ? pw[k] : (FL_T)1, has_pw);
        } else {
            l = FL_S(fl_sigmoid_focal)(xk, yk, f.alpha_pos, f.alpha_neg, f.gamma,
                                       general_gamma ? -1 : f.int_gamma);
        }
        if (has_w) l = FL_S(fl_coef)(w[k], l);
        out[k] = l;
        sum += l;
    }
    *flags = (FL_OUTSIDE_UNIT(x_lo, x_sum) ? FL_BAD_INPUT : 0) |
             (FL_OUTSIDE_UNIT(y_lo, y_sum) ? FL_BAD_TARGET : 0);
    return sum;
}

#undef FL_OUTSIDE_UNIT

/* A block is read in chunks of FL_CHUNK elements, staged in five buffers of FL_CHUNK values in
 * the thread's scratch memory. Chunk sums (float lanes) are added in double; a chunk whose float
 * sum overflows (float32 losses near FLT_MAX) is summed again in double from its stored losses,
 * so "sum" and "mean" are finite whenever the float64 sum is. With statistics, each chunk's
 * losses are staged in lbuf and accumulated by fl_stats_chunk, with the weight operand as the
 * sample weight. */
FL_INLINE void FL_S(fl_binary_block)(const void *args, ptrdiff_t start, ptrdiff_t len,
                                     fl_block_result *result, const int loss) {
    const fl_binary_args *a = (const fl_binary_args *)args;
    const fl_stats *st = a->stats;
    FL_S(fl_focal_params) f;
    f.alpha_pos = a->alpha < 0 ? 1 : (FL_T)a->alpha;
    f.alpha_neg = a->alpha < 0 ? 1 : (FL_T)(1 - a->alpha);
    /* gamma as rounded to FL_T, finite (a larger one gives factors of 0 or 1 all the same),
     * and its integer-ness decided on that value: below float's smallest subnormal it is 0 */
    f.gamma = a->gamma < FL_MAX ? (FL_T)a->gamma : FL_MAX;
    f.int_gamma = f.gamma <= 4 && f.gamma == (int)f.gamma ? (int)f.gamma : -1;
    _Static_assert(5 * FL_CHUNK * sizeof(FL_T) <= FL_KERNEL_SCRATCH,
                   "the staging buffers exceed the scratch memory");
    FL_T *xbuf = (FL_T *)result->scratch, *ybuf = xbuf + FL_CHUNK, *wbuf = ybuf + FL_CHUNK;
    FL_T *pwbuf = wbuf + FL_CHUNK, *lbuf = pwbuf + FL_CHUNK;
    double sum = 0;
    int flags = 0;
    for (ptrdiff_t at = start, n; at < start + len; at += n) {
        n = start + len - at < FL_CHUNK ? start + len - at : FL_CHUNK;
        const FL_T *x = FL_S(fl_read_input)(a, at, n, xbuf);
        const FL_T *y = FL_S(fl_read_target)(a, at, n, ybuf);
        const FL_T *w = FL_S(fl_read_operand)(st ? &st->sample_weight : &a->weight, at, n, wbuf);
        const FL_T *pw = loss == FL_LOSS_BCE_LOGITS
                             ? FL_S(fl_read_operand)(&a->pos_weight, at, n, pwbuf) : NULL;
        /* the losses are always stored (to out, or to lbuf in L1): a chunk whose float sum is
         * not finite is summed again from them in double */
        FL_T *out = st || !a->out ? lbuf : (FL_T *)a->out + at;
        ptrdiff_t n_loop = n;
        if (n % FL_LANES) { /* the data's tail: pad it (see FL_LANES) */
            n_loop = FL_PADDED(n);
            x = FL_S(fl_pad)(x, n, n_loop, loss == FL_LOSS_BCE ? 0 : -(FL_T)INFINITY, xbuf);
            y = FL_S(fl_pad)(y, n, n_loop, 0, ybuf); /* with x: a loss of exactly 0 */
            w = w ? FL_S(fl_pad)(w, n, n_loop, 0, wbuf) : NULL;
            pw = pw ? FL_S(fl_pad)(pw, n, n_loop, 1, pwbuf) : NULL;
            out = lbuf;
        }
        const FL_T *w_loop = st ? NULL : w;
        int chunk_flags;
#define FL_CALL(has_w, has_pw, general)                                                  \
    FL_S(fl_binary_loop)(x, y, w_loop, pw, out, n_loop, f, &chunk_flags, loss, has_w, has_pw, \
                         general)
#define FL_VARIANTS(has_pw, general) \
    (w_loop ? FL_CALL(1, has_pw, general) : FL_CALL(0, has_pw, general))
        FL_T chunk_sum = pw                                               ? FL_VARIANTS(1, 0)
                         : f.int_gamma < 0 && loss == FL_LOSS_SIGMOID_FOCAL ? FL_VARIANTS(0, 1)
                                                                            : FL_VARIANTS(0, 0);
#undef FL_VARIANTS
#undef FL_CALL
        if (!st && !(chunk_sum - chunk_sum == 0)) { /* inf or nan: float32 overflow perhaps */
            double exact = 0;
            for (ptrdiff_t k = 0; k < n; k++) exact += (double)out[k];
            sum += exact;
        } else {
            sum += chunk_sum;
        }
        flags |= chunk_flags;
        if (a->out && out == lbuf && !st) memcpy((FL_T *)a->out + at, lbuf, (size_t)n * sizeof(FL_T));
        if (st) {
            if (w) FL_S(fl_stats_chunk)(st, lbuf, w, NULL, NULL, n, result, 1, 0);
            else FL_S(fl_stats_chunk)(st, lbuf, NULL, NULL, NULL, n, result, 0, 0);
        }
    }
    if (!st) result->loss = sum;
    result->flags |= flags;
}

static void FL_S(fl_bce_block)(const void *args, ptrdiff_t start, ptrdiff_t len,
                               fl_block_result *result) {
    FL_S(fl_binary_block)(args, start, len, result, FL_LOSS_BCE);
}

static void FL_S(fl_bce_logits_block)(const void *args, ptrdiff_t start, ptrdiff_t len,
                                      fl_block_result *result) {
    FL_S(fl_binary_block)(args, start, len, result, FL_LOSS_BCE_LOGITS);
}

static void FL_S(fl_sigmoid_focal_block)(const void *args, ptrdiff_t start, ptrdiff_t len,
                                         fl_block_result *result) {
    FL_S(fl_binary_block)(args, start, len, result, FL_LOSS_SIGMOID_FOCAL);
}
