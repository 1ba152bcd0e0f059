"""Pure imaging code: geometry, decoding, assembly into volumes, masks, interop, display. No HTTP."""
