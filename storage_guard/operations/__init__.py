"""Operations tools: later delivery of stashed saves, the report, the purge, the doctor,
and what operators are told about circuits. The management commands are thin layers over these."""
