import { EDGE_ERROR } from "../tenancy/quota-error.js";

/** The caller is known but may not use what it asked for (a server outside its tenant's list). */
export class AccessError extends Error {
  readonly code = EDGE_ERROR.forbidden;

  constructor(message: string) {
    super(message);
    this.name = "AccessError";
  }
}
