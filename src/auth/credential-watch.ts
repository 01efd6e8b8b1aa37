import type { Principal } from "./principal.js";

interface Held {
  principal: Principal;
  end: (why: string) => void;
  expiry: NodeJS.Timeout | undefined;
}

/** setTimeout's longest delay (about 24.8 days); a later expiry is rechecked then. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The connections that outlive the request that admitted them (WebSockets, SSE streams), each with the
 * principal it was admitted as. A request is checked when it arrives; these are ended when their
 * credential stops being good: an access token at its expiry, an API key when it is revoked.
 */
export class CredentialWatch {
  private readonly held = new Set<Held>();

  /** Watches one connection; `end` closes it, saying why. Returns the call that stops watching it. */
  hold(principal: Principal, end: (why: string) => void): () => void {
    const held: Held = { principal, end, expiry: undefined };
    this.held.add(held);
    this.armExpiry(held);
    return () => this.release(held);
  }

  /** Ends every watched connection whose principal `stillValid` refuses now. */
  recheck(stillValid: (principal: Principal) => boolean, why: string): void {
    for (const held of [...this.held]) {
      if (stillValid(held.principal)) continue;
      this.release(held);
      held.end(why);
    }
  }

  get size(): number {
    return this.held.size;
  }

  private armExpiry(held: Held): void {
    const expiresAt = held.principal.credential?.expiresAt;
    if (expiresAt === undefined) return;
    const left = expiresAt - Date.now();
    held.expiry = setTimeout(() => {
      if (expiresAt > Date.now()) return this.armExpiry(held);
      this.release(held);
      held.end("the access token expired; reconnect with a fresh one");
    }, Math.min(Math.max(left, 0), MAX_TIMER_MS)).unref();
  }

  private release(held: Held): void {
    clearTimeout(held.expiry);
    this.held.delete(held);
  }
}
