// Flux-Order sale page: the waiting room's proof of work (docs/waiting-room.md).
// A join may be answered 428 proof_required with a challenge; the page finds
// the smallest nonce n such that SHA-256(challenge "." n) starts with
// `difficulty` zero bits, and joins again with Flux-Order-Proof. WebCrypto
// hashes where the page is a secure context (https, localhost); elsewhere
// (the kind quick start serves plain http) the small SHA-256 below does.
'use strict';
window.FluxPow = (() => {
  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);
  const W = new Int32Array(64);
  const H = new Int32Array(8);

  // digest hashes the first n bytes of m, whose buffer has room for the
  // padding (a multiple of 64 bytes at least n + 9), into H.
  function digest(m, n) {
    const blocks = (n + 9 + 63) >> 6;
    const end = blocks << 6;
    m[n] = 0x80;
    m.fill(0, n + 1, end);
    const bitsLen = n * 8;
    m[end - 5] = Math.floor(n / 0x20000000); // bits above 2^32
    m[end - 4] = bitsLen >>> 24; m[end - 3] = bitsLen >>> 16; m[end - 2] = bitsLen >>> 8; m[end - 1] = bitsLen;
    let h0 = 0x6a09e667, h1 = 0xbb67ae85, h2 = 0x3c6ef372, h3 = 0xa54ff53a;
    let h4 = 0x510e527f, h5 = 0x9b05688c, h6 = 0x1f83d9ab, h7 = 0x5be0cd19;
    for (let off = 0; off < end; off += 64) {
      for (let i = 0; i < 16; i++) {
        const j = off + (i << 2);
        W[i] = (m[j] << 24) | (m[j + 1] << 16) | (m[j + 2] << 8) | m[j + 3];
      }
      for (let i = 16; i < 64; i++) {
        const a = W[i - 15], b = W[i - 2];
        const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
        const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
        W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
      }
      let a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
      for (let i = 0; i < 64; i++) {
        const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
        const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      h0 = (h0 + a) | 0; h1 = (h1 + b) | 0; h2 = (h2 + c) | 0; h3 = (h3 + d) | 0;
      h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + h) | 0;
    }
    H[0] = h0; H[1] = h1; H[2] = h2; H[3] = h3; H[4] = h4; H[5] = h5; H[6] = h6; H[7] = h7;
  }

  // sha256 returns the SHA-256 of bytes (a Uint8Array) as 32 bytes.
  function sha256(bytes) {
    const m = new Uint8Array(((bytes.length + 9 + 63) >> 6) << 6);
    m.set(bytes);
    digest(m, bytes.length);
    const out = new Uint8Array(32);
    for (let i = 0; i < 8; i++) {
      const v = H[i];
      out[i * 4] = v >>> 24; out[i * 4 + 1] = v >>> 16; out[i * 4 + 2] = v >>> 8; out[i * 4 + 3] = v;
    }
    return out;
  }

  // zeroBitsH counts the leading zero bits of the digest in H.
  function zeroBitsH() {
    let n = 0;
    for (let i = 0; i < 8; i++) {
      if (H[i] === 0) { n += 32; continue; }
      return n + Math.clz32(H[i]);
    }
    return n;
  }

  function zeroBits(d) {
    let n = 0;
    for (let i = 0; i < d.length; i++) {
      if (d[i] === 0) { n += 8; continue; }
      return n + Math.clz32(d[i]) - 24;
    }
    return n;
  }

  const enc = new TextEncoder();
  const pause = () => new Promise((resolve) => setTimeout(resolve, 0));

  // The bundled SHA-256, a slice at a time so the page stays responsive:
  // the challenge's bytes are written once, each nonce's digits after them.
  async function solveJS(challenge, difficulty) {
    const prefix = enc.encode(challenge + '.');
    const m = new Uint8Array(((prefix.length + 20 + 9 + 63) >> 6) << 6);
    m.set(prefix);
    for (let n = 0; ; n++) {
      const digits = String(n);
      let len = prefix.length;
      for (let i = 0; i < digits.length; i++) m[len++] = digits.charCodeAt(i);
      digest(m, len);
      if (zeroBitsH() >= difficulty) return { proof: challenge + '.' + digits, hashes: n + 1 };
      if ((n & 0xffff) === 0xffff) await pause();
    }
  }

  // WebCrypto: digests in batches (each call is asynchronous).
  async function solveWebCrypto(challenge, difficulty) {
    const prefix = challenge + '.';
    const batch = 1024;
    for (let base = 0; ; base += batch) {
      const ds = await Promise.all(Array.from({ length: batch },
        (_, i) => crypto.subtle.digest('SHA-256', enc.encode(prefix + (base + i)))));
      for (let i = 0; i < batch; i++) {
        if (zeroBits(new Uint8Array(ds[i])) >= difficulty) return { proof: prefix + (base + i), hashes: base + i + 1 };
      }
    }
  }

  // solve returns {proof, hashes, ms, engine}; opts.engine forces 'js' or
  // 'webcrypto' (tests measure both).
  async function solve(challenge, difficulty, opts) {
    let engine = (opts && opts.engine) || (window.isSecureContext && window.crypto && crypto.subtle ? 'webcrypto' : 'js');
    if (engine === 'webcrypto' && !(window.crypto && crypto.subtle)) engine = 'js';
    const t0 = performance.now();
    const r = engine === 'webcrypto' ? await solveWebCrypto(challenge, difficulty) : await solveJS(challenge, difficulty);
    r.ms = performance.now() - t0;
    r.engine = engine;
    return r;
  }

  return { sha256, zeroBits, solve };
})();
