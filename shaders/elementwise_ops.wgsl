// The element-wise functions the scalar (elementwise.wgsl) and vec4 (elementwise4.wgsl) kernels
// share: unary ops with Caffe's exact formulas, forward and backward.

fn sigm(x: f32) -> f32 {
    return 0.5 * tanh(0.5 * x) + 0.5;
}

fn step(c: bool) -> f32 {
    return select(0.0, 1.0, c);
}

// pow with C semantics for negative bases and integral exponents.
fn cpow(v: f32, p: f32) -> f32 {
    if (p == 1.0) { return v; }
    if (p == 2.0) { return v * v; }
    if (v < 0.0 && fract(p) == 0.0) {
        let r = pow(-v, p);
        if ((i32(p) & 1) != 0) { return -r; }
        return r;
    }
    return pow(v, p);
}

fn unary_f(op: u32, x: f32) -> f32 {
    let a = pf(9u);
    let b = pf(10u);
    let c = pf(11u);
    switch op {
        case 0u: { return max(x, 0.0) + a * min(x, 0.0); }
        case 1u: { return sigm(x); }
        case 2u: { return tanh(x); }
        case 3u: { return abs(x); }
        case 4u: {
            if (x > 0.0) { return x + log(1.0 + exp(-x)); }
            return log(1.0 + exp(x));
        }
        case 5u: { return max(x, 0.0) + a * (exp(min(x, 0.0)) - 1.0); }
        case 6u: {
            var v = x;
            if (b != 1.0) { v *= b; }
            if (c != 0.0) { v += c; }
            return cpow(v, a);
        }
        case 7u: {
            var v = x;
            if (a != 1.0) { v = a * x; }
            v = exp(v);
            if (b != 1.0) { v *= b; }
            return v;
        }
        case 8u: {
            var v = x;
            if (a != 1.0) { v *= a; }
            if (b != 0.0) { v += b; }
            v = log(v);
            if (c != 1.0) { v *= c; }
            return v;
        }
        case 9u: { return step(x > a); }
        case 10u: { return max(a, min(x, b)); }
        default: { return x * sigm(x * a); }
    }
}

// dx from x, y, dy (op codes as unary_f; Power's sub-case chosen on the host: word 12).
fn unary_b(op: u32, x: f32, y: f32, d: f32) -> f32 {
    let a = pf(9u);
    let b = pf(10u);
    let c = pf(11u);
    switch op {
        case 0u: { return d * (step(x > 0.0) + a * step(x <= 0.0)); }
        case 1u: { return d * y * (1.0 - y); }
        case 2u: { return d * (1.0 - y * y); }
        case 3u: { return (step(0.0 < x) - step(x < 0.0)) * d; }
        case 4u: {
            let e = exp(min(x, 50.0));
            return d * e / (e + 1.0);
        }
        case 5u: { return d * (step(x > 0.0) + (a + y) * step(x <= 0.0)); }
        case 6u: {
            // a power, b scale, c shift
            let ds = a * b;
            switch pu(12u) {
                case 0u: { return 0.0; }
                case 1u: { return d * ds; }
                case 2u: { return d * (ds * b * x + ds * c); }
                case 3u: { return d * ((y / x) * a); }
                default: {
                    var v = x;
                    if (b != 1.0) { v *= b; }
                    v += c;
                    var g = y / v;
                    if (ds != 1.0) { g *= ds; }
                    return d * g;
                }
            }
        }
        case 7u: {
            let g = y * d;
            if (a != 1.0) { return g * a; }
            return g;
        }
        case 8u: {
            var v = x;
            if (a != 1.0) { v *= a; }
            if (b != 0.0) { v += b; }
            var g = 1.0 / v;
            let ns = a * c;
            if (ns != 1.0) { g *= ns; }
            return d * g;
        }
        case 9u: { return 0.0; }
        case 10u: { return d * step(x >= a && x <= b); }
        default: {
            let s = sigm(x * a);
            let by = a * y;
            return d * (by + s * (1.0 - by));
        }
    }
}

