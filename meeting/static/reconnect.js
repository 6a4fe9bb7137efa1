// The page's one reconnect policy: capped exponential backoff with jitter, reset after a
// success. Used by the captions socket (captionsocket.js, retries for as long as the
// page is open) and the meeting connection (connection.js: one policy counts every rejoin
// until media flows again; gives up after a few tries and offers "Try again").
//
// Jitter spreads the reconnects of a whole room after a server restart, so they do not
// all arrive in the same instant: each delay is drawn in [(1 - jitter) * d, d], where d
// doubles from `baseMs` up to `maxMs`.

export class ReconnectPolicy {
  /**
   * @param {{baseMs?: number, maxMs?: number, jitter?: number, maxAttempts?: number,
   *          random?: () => number}} options
   */
  constructor({ baseMs = 500, maxMs = 10000, jitter = 0.5, maxAttempts = Infinity, random = Math.random } = {}) {
    if (!(baseMs > 0 && maxMs >= baseMs && jitter >= 0 && jitter <= 1 && maxAttempts >= 0)) {
      throw new RangeError("reconnect policy: need 0 < baseMs <= maxMs, 0 <= jitter <= 1, maxAttempts >= 0");
    }
    this.baseMs = baseMs;
    this.maxMs = maxMs;
    this.jitter = jitter;
    this.maxAttempts = maxAttempts;
    this.random = random;
    this.attempts = 0;
  }

  /** The delay before the next attempt in ms, or null once `maxAttempts` are used up. */
  next() {
    if (this.attempts >= this.maxAttempts) return null;
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** this.attempts);
    this.attempts += 1;
    return Math.round(ceiling * (1 - this.jitter * this.random()));
  }

  /** After a success: the next failure starts again from `baseMs`. */
  reset() {
    this.attempts = 0;
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
