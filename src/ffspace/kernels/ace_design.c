/* Linear ACE design rows for the least-squares fit: each atom's basis B_i (F,) and its derivatives dB_i/dr (F, T)
 * with respect to the T = 3N coordinates of its structure, summed per element of the centre atom.
 *
 * Built and loaded like ace.c (ffspace/kernels/build.py); called by ffspace/train/ace_design.py, which computes the
 * atomic bases X_i (the A and A' of ffspace/models/ace.py, flattened) and their tangents dX_i (X, T) with torch, and
 * derives the tables below from the model. Every feature is a homogeneous polynomial of degree ν ≤ 3 in X, written
 * through its partial derivatives ("entries"): for each factor index q it depends on,
 *
 *     V_f,q = ∂B_f/∂X_q = Σ_terms coef · X_o1 · X_o2        (o1, o2 = -1: the factor is absent)
 *
 * so that dB_f = Σ_q V_f,q dX_q (forward mode, the tangents as the contiguous SIMD axis) and, by Euler's theorem for
 * homogeneous polynomials, B_f = (1/ν) Σ_q V_f,q X_q (ν = 0: the constant feature, B = 1).
 *
 * Features are split between the threads (each writes its own columns: no reduction), atoms run in order.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* row (S·F,) += Σ_i B_i in its element's block; rows (S·F, T) += Σ_i dB_i in the same layout (rows[c·T + t]). */
int ace_design(int64_t n_atoms, const int64_t *species, int64_t xl, int64_t n_tan, const double *x,
               const double *dx, int64_t n_features, const int32_t *order, const int64_t *entry_start,
               const int32_t *entry_q, const int64_t *term_start, const double *term_coef, const int32_t *term_o1,
               const int32_t *term_o2, int32_t n_threads, double *row, double *rows) {
    const int64_t T = n_tan;
    int failed = 0;
    if (n_threads < 1) n_threads = 1;
#pragma omp parallel num_threads(n_threads) reduction(|| : failed)
    {
        double *db = aligned_alloc(64, ((sizeof(double) * (size_t)T + 63) / 64) * 64);
        if (!db) {
            failed = 1;
        } else {
#pragma omp for schedule(dynamic, 64)
            for (int64_t f = 0; f < n_features; f++) {
                const double nu = order[f];
                for (int64_t i = 0; i < n_atoms; i++) {
                    const double *xi = x + i * xl, *dxi = dx + i * xl * T;
                    const int64_t col = species[i] * n_features + f;
                    if (order[f] == 0) {  /* the constant: B = 1, no derivative */
                        row[col] += 1.0;
                        continue;
                    }
                    double b = 0.0;
                    memset(db, 0, sizeof(double) * (size_t)T);
                    for (int64_t e = entry_start[f]; e < entry_start[f + 1]; e++) {
                        double v = 0.0;
                        for (int64_t k = term_start[e]; k < term_start[e + 1]; k++) {
                            double c = term_coef[k];
                            if (term_o1[k] >= 0) c *= xi[term_o1[k]];
                            if (term_o2[k] >= 0) c *= xi[term_o2[k]];
                            v += c;
                        }
                        const int64_t q = entry_q[e];
                        b += v * xi[q];
                        const double *dq = dxi + q * T;
#pragma omp simd
                        for (int64_t t = 0; t < T; t++) db[t] += v * dq[t];
                    }
                    row[col] += b / nu;
                    double *out = rows + col * T;
#pragma omp simd
                    for (int64_t t = 0; t < T; t++) out[t] += db[t];
                }
            }
            free(db);
        }
    }
    return failed;
}
