import asyncpg


async def test_fresh_database_is_real_postgres(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        version = await conn.fetchval("SHOW server_version_num")
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert int(version) >= 120000
    assert tables == 0
